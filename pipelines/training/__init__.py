"""The training loop shared by every model family, its checkpoints and its validation figures."""
