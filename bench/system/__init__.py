"""System benches: freshness and latency through several processes talking as deployed
(``python -m bench.system.NAME``)."""
