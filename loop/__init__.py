"""loop: the whole system on one machine, above the components.

- ``cli``: the one ``convcg`` command line, fronting every component's commands;
- ``supervisor``: components as child processes (``python -m loop.cli ...``), started,
  watched and stopped;
- ``up``: ``convcg up``, the whole loop end to end on embedded defaults;
- ``report``: the report ``convcg up`` ends with.

This is the only package that imports several components.
"""
