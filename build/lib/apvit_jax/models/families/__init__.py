"""Model families: what the generic trainer, step and evaluator need to know about a kind of model
(families/base.py). The table of families is models/registry.py."""
