"""eecc: early-exit conversion compiler."""

__version__ = "0.1.0"
