"""The trainer: the label-consuming service and its steps (train, fine-tune, gate, publish)."""
