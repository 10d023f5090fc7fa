"""index_refresher: re-embeds the catalog with each new model version, builds a versioned FAISS
index artifact and asks the retrieval service to hot-swap it in (``convcg refresher``,
``convcg index ...``).

Modules, one concept each (see README.md):
- ``settings``: the component's typed settings (env prefix ``CONVCG_INDEX_``);
- ``index_build``: embedding a catalog, building a FAISS index, measuring ANN recall (pure);
- ``builder``: catalog file + model version -> artifact (what the refresher runs);
- ``refresher``: watches the registry and the impressions topic, builds and pushes indexes;
- ``cli``: click commands (``refresher``, ``index``).

The artifact format and the id map are the registry's (:mod:`registry.index_artifact`,
:mod:`registry.idmap`); the service that serves the artifacts is :mod:`retrieval`.
"""
