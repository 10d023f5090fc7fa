"""convcg: streaming features and labels for shopping conversion candidate generation."""

__version__ = "0.1.0"
