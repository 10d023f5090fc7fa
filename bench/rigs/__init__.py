"""What several benches share: the sink/worker launch rig (``sink``), the paced producer
(``paced``), the freshness probes and CPU shares (``probes``), the retrieval index helpers
(``index``) and the training helpers (``training``)."""
