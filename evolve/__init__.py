"""evolve: an autonomous research loop for linear-attention token mixers."""
__version__ = "0.1.0"
