"""The product's Celery app without orderflow.worker.ReplaceRecycledProcessesPromptly: Celery's own
5-second look for exited pool processes, the baseline of bench/recycle.py."""

from orderflow.celery import app

app.steps["worker"].discard("orderflow.worker:ReplaceRecycledProcessesPromptly")
