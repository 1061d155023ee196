"""Data in: validated train/val/test splits, and the on-disk cache of features at candidate exits."""
