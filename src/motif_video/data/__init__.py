"""Data: sources of training batches (nothing here imports the model)."""
