"""Training: state and optimizer, per-device steps, parallel wrappers, checkpoints, the loop."""
