"""Reliability verdicts: what survives kills, restarts, scale-out and hot swaps
(``python -m bench.reliability.NAME``)."""
