"""retrieval: user -> top-k candidates over HTTP, from a (model, FAISS index) serving pair that
is hot-swapped with no failed query (``convcg retrieval serve``).

Modules, one concept each:
- ``settings``: the service's typed settings (env prefix ``CONVCG_INDEX_``);
- ``serving``: the immutable serving pair (model + index) and the atomically swapped holder;
- ``loader``: loading and verifying a pair beside the serving one, in a background thread;
- ``user_features``: online user features from the features HTTP service;
- ``validation``: request parsing and clear 4xx messages (pure);
- ``metrics``: Prometheus metrics;
- ``service``: the FastAPI retrieval app (retrieve, health, metrics, admin);
- ``cli``: the ``retrieval serve`` command.
"""
