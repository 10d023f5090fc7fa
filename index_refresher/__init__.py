"""index_refresher: FAISS item index, zero-downtime hot swap, and the retrieval API.

Modules, one concept each (see README.md):
- ``settings``: the component's typed settings (env prefix ``CONVCG_INDEX_``);
- ``idmap``: the stable item_id <-> int64 FAISS id mapping;
- ``index_build``: embedding a catalog, building a FAISS index, measuring ANN recall (pure);
- ``artifact``: writing and verifying a versioned index artifact on disk;
- ``builder``: catalog file + model version -> artifact (what the refresher runs);
- ``serving``: the immutable serving pair (model + index) and the atomically swapped holder;
- ``loader``: loading and verifying a pair beside the serving one, in a background thread;
- ``user_features``: online user features from the features HTTP service;
- ``validation``: request parsing and clear 4xx messages (pure);
- ``metrics``: Prometheus metrics;
- ``service``: the FastAPI retrieval app (retrieve, health, metrics, admin);
- ``refresher``: watches the registry and the impressions topic, builds and pushes indexes;
- ``testing``: a real uvicorn server in a thread and a registry of tiny trained models;
- ``cli``: click commands (``refresher``, ``retrieval``, ``index``).
"""
