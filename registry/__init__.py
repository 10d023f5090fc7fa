"""The model registry: where training and retrieval meet on disk.

* :mod:`registry.store`: versioned model checkpoints (publish, load, rollback, CURRENT); a
  checkpoint is rebuilt with the two-tower modules of :mod:`model`;
* :mod:`registry.serving_model`: what an index builder or a server needs from a loaded version,
  and the loader that reads one from the registry;
* :mod:`registry.index_artifact`, :mod:`registry.idmap`: versioned FAISS index artifacts
  beside the model they were embedded with;
* :mod:`registry.containment`: version names, never a path outside the registry.

Neither the trainer nor the refresher nor the retrieval service is imported here.
"""
