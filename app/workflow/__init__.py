"""Orchestration: task specs, task_train, trainers, rolling tasks (knows nothing of Celery or Hydra)."""
