"""Data: sources (tfds, raw files, built-in), on-device augmentation, deterministic batch order."""
