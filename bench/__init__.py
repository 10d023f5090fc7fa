"""Benchmarks and experiments, each run from the repository root as ``python -m bench.KIND.NAME``
(``--help`` lists its options), by kind: ``perf`` (one component beside its baseline),
``system`` (freshness and latency through the whole path), ``reliability`` (what survives kills
and swaps) and ``experiments`` (quality questions on real data); the rigs they share are in
``bench.rigs``. Each prints its figures beside a baseline measured in the same run."""

from pathlib import Path

#: the repository root: the working directory of the processes the benches start
ROOT = Path(__file__).resolve().parent.parent
