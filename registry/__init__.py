"""The model registry: where training and retrieval meet on disk.

* :mod:`registry.store`: versioned model checkpoints (publish, load, rollback, CURRENT);
* :mod:`registry.model_config`, :mod:`registry.model`, :mod:`registry.encoding`
  (with :mod:`registry.query_columns`, a batch of queries as a frame or as its dicts),
  :mod:`registry.inference`: the two-tower model code a checkpoint is rebuilt with;
* :mod:`registry.index_artifact`, :mod:`registry.idmap`: versioned FAISS index artifacts
  beside the model they were embedded with;
* :mod:`registry.item_tower`: what an index builder or a server needs from a loaded version.

Neither the trainer nor the refresher nor the retrieval service is imported here.
"""
