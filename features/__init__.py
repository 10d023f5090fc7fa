"""features/: the Feast feature store of convcg.

Modules (one concept each):

- ``settings``   typed settings (env prefix ``CONVCG_FEATURES_``), every path under ``./var/``
- ``repo/``      the Feast repo in code (``definitions``: entities, push sources, stream / batch
                 feature views) and ``store``: opening a ``FeatureStore``, applying the repo
- ``sink/``      the Kafka -> Feast sink: ``worker`` (batches, retry with backoff, commit after
                 write), ``updates`` (pure: validating ``FeatureUpdate`` / ``Label`` messages into
                 frames), ``pending`` (rows kept for the next offline flush)
- ``online/``    ``read``: fast online reads with cached feature views; ``write``: Feast's own
                 online row format, written fast
- ``offline``    append-only parquet part files (offline feature rows and the label table)
- ``pit``        pure point-in-time helpers (snapshot cut, time-sliced source pruning)
- ``dataset``    training sets through Feast's historical retrieval (leak-proof snapshot)
- ``service``    the HTTP lookup service (FastAPI)
- ``metrics``    Prometheus metrics
- ``cli``        ``convcg features apply|sink|serve`` and ``convcg dataset``
"""
