"""Install the beat schedules of the contract. Idempotent, and an operator's later edits in
the admin (interval, enabled) are kept: an existing task of the same name is left alone."""

from django.db import migrations
from django.utils import timezone

SCHEDULES = [
    ("retry-failed-notifications", "notifications.tasks.retry_failed_notifications", 5, "minutes"),
    ("cleanup-old-notifications", "notifications.tasks.cleanup_old_notifications", 1, "hours"),
]


def install(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    for name, task, every, period in SCHEDULES:
        if PeriodicTask.objects.filter(name=name).exists():
            continue
        interval, _ = IntervalSchedule.objects.get_or_create(every=every, period=period)
        PeriodicTask.objects.create(name=name, task=task, interval=interval, enabled=True)
    # Tell a running beat that its schedule changed, as the admin does on save.
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def uninstall(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=[name for name, *_ in SCHEDULES]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0002_operator_console"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(install, uninstall)]
