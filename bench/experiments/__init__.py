"""Experiments: retrieval quality and training questions answered on real data, and the
training-set build (``python -m bench.experiments.NAME``)."""
