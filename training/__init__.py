"""The training component: labels in, gated model versions out.

* :mod:`training.history`: the event or label history as arrays, and a user's history as of a time;
* :mod:`training.learn`: training rows (``rows``), examples, losses, the fit loop, model recipes;
* :mod:`training.trainer`: the trainer service and its steps (train, fine-tune, gate, publish);
* :mod:`training.evaluation`: the point-in-time protocol (metric names, both protocols), the
  held-out gate set, ``grade()``, baselines and ``convcg eval``;
* :mod:`training.cli`, :mod:`training.config`: the commands and the settings.
"""
