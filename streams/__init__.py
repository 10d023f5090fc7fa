"""streams/: event ingestion, replay of real and synthetic logs, the label join and the
streaming aggregates (see ../shared/DESIGN.md)."""
