"""The Kafka -> Feast sink: ``worker`` (the consume, write, commit loop), ``updates`` (pure
validation and shaping) and ``pending`` (what waits for the next offline flush)."""
