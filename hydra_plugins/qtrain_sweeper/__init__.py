"""``hydra/sweeper=qtrain``, the default sweeper of ``qtrain run -m``."""
