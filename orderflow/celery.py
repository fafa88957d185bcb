"""The Celery app: configured from Django settings (CELERY_*), tasks found in each app."""

from celery import Celery

from orderflow.configuration import report_bad_configuration_in_one_line, use_settings_module

report_bad_configuration_in_one_line()
use_settings_module()

app = Celery("orderflow")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.steps["worker"].add("orderflow.worker:ReplaceRecycledProcessesPromptly")


@app.on_after_configure.connect
def set_up_django(sender, **kwargs):
    """When a `celery` command first reads the configuration (the worker and beat too, before
    Celery's Django fix-up would). `call` and `result` read and write task results through
    django-celery-results' models, which need Django set up. A web process has set it up by then."""
    from django.apps import apps

    if not (apps.ready or apps.loading):
        import django

        django.setup()
