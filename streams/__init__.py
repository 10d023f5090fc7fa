"""streams/: event ingestion, replay of real and synthetic logs, the label join and the
streaming aggregates (the contract: docs/contract.md).

- ``kafka/``: what both workers share on the broker: the output producer, the changelog read,
  and ``checkpoint.py``, the one commit order (outputs -> state -> flush -> offsets).
- ``label_join/``: the label-join worker (`convcg worker`): rules, joiner, state, watermark,
  ack order and the batch processor; ``label_join/faust/`` holds every Faust-specific touch.
- ``aggregates/``: the streaming feature aggregates (`convcg aggregates`): windows, stages,
  the engagement sequence, their changelog and the worker.
- ``replay/``: `convcg replay`, producer watermarks and the event-log datasets.
"""
