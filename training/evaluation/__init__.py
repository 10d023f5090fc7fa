"""Retrieval quality: the point-in-time protocol and its metric names (``protocol``), the one
``grade()`` (``scoring``), the trainer's held-out gate set, baselines and ``convcg eval`` (``run``)."""
