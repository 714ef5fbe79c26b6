"""Celery wiring: the app and the tasks that run scoring on GPU workers."""
