"""The Feast repo in code (``definitions``) and opening and applying it (``store``)."""
