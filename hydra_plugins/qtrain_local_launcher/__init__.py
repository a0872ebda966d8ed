"""Hydra launcher ``hydra/launcher=local``, the default of ``qtrain run -m``: jobs run one after another here."""
