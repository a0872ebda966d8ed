"""Models: one contract (base.py); LightGBM, DoubleEnsemble, GRU and MLP on a shared torch loop."""
