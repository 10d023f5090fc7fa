"""The online store, fast: ``read`` (lookups with cached feature views) and ``write`` (Feast's own
row format)."""
