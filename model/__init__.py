"""The two-tower retriever as plain ``nn.Module``s and the pure functions around it.

* :mod:`model.config`: ``ModelConfig`` (architecture and loss; saved beside the weights);
* :mod:`model.towers`: the query and item towers and ``TwoTowerModel``;
* :mod:`model.sequence`: the encoder of the user's recent engagements;
* :mod:`model.encoding` (with :mod:`model.query_columns`): tables and query dicts as model inputs;
* :mod:`model.inference`: batched embedding with a trained model.

Imports nothing of the project but :mod:`convcg`; the registry stores and loads these modules,
training trains them, retrieval serves them.
"""
