"""Celery task functions: thin wrappers that decode a JSON task spec and call ``app.workflow``."""
