"""The one place FAISS is imported. Its loader tries the optional AVX512 / AVX2 builds first and
logs each miss (a ``ModuleNotFoundError`` at INFO) before loading the generic one; those lines
are noise in every component's log, so its logger is held at WARNING (a real failure to load
still raises)."""

from __future__ import annotations

import logging


def load_faiss():
    """The ``faiss`` module, imported without its loader's probing lines."""
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    import faiss as module

    return module
