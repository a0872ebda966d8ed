"""Hydra launcher ``hydra/launcher=celery``: each multirun job becomes a task-pool task trained by Celery workers."""
