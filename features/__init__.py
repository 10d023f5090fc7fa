"""features/: the Feast feature store of convcg.

Modules (one concept each):

- ``settings``   typed settings (env prefix ``CONVCG_FEATURES_``), every path under ``./var/``
- ``definitions`` the Feast repo in code: entities, push sources, stream / batch feature views
- ``store``      opening a ``FeatureStore`` from settings, applying the repo, registry caching
- ``updates``    pure logic: validating ``FeatureUpdate`` / ``Label`` messages into frames
- ``offline``    append-only parquet part files (offline feature rows and the label table)
- ``sink``       the Kafka -> Feast sink (batches, retry with backoff, commit after write)
- ``pit``        pure point-in-time helpers (snapshot cut, time-sliced source pruning)
- ``dataset``    training sets through Feast's historical retrieval (leak-proof snapshot)
- ``online``     fast online reads over Feast's online store with cached feature views
- ``service``    the HTTP lookup service (FastAPI)
- ``metrics``    Prometheus metrics
- ``samples``    small seeded sample data for tests and benchmarks
- ``cli``        ``convcg features apply|sink|serve`` and ``convcg dataset``
"""
