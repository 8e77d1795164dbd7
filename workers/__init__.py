"""Scoring workers: the Celery app and task, the embedded pool, the per-process model cache."""
