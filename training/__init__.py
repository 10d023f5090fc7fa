"""training: the two-tower conversion retriever, incremental fine-tuning, model registry."""
