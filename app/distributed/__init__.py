"""Celery glue: the broker (task names, sending, reading the queues), the infrastructure pre-check, and what runs
inside a worker process (start-up, running a delivered pool task, the reconciler)."""
