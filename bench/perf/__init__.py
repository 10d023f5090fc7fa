"""Performance benches: the throughput, CPU cost or latency of one component beside a baseline
measured in the same run (``python -m bench.perf.NAME``)."""
