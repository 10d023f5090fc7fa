"""Producing events: `convcg replay` (`replay`), producer watermarks (`watermarks`) and the
event logs it replays (`datasets/`)."""
