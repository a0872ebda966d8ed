"""qtrain: distributed training and evaluation of quantitative alpha models.

Importing this package has no side effects: no environment is read and nothing heavy is imported.
The Celery application lives in :mod:`app.celery` (``celery -A app`` finds ``app.celery.app``).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
