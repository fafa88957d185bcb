"""The Celery app: configured from Django settings (CELERY_*), tasks found in each app."""

import os

from celery import Celery

from orderflow.configuration import report_bad_configuration_in_one_line

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orderflow.settings.local")
report_bad_configuration_in_one_line()

app = Celery("orderflow")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
