"""Start a Celery worker for one or more queues with the defaults each queue wants.

python manage.py start_celery_worker --queue sms --concurrency 2
"""

import importlib.util

from celery.bin.celery import celery as celery_command
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from orderflow.celery import app

CHANNEL_QUEUES = {"sms", "email"}
LOG_LEVELS = ["debug", "info", "warning", "error", "critical"]
POOLS = ["prefork", "solo", "threads", "gevent", "eventlet"]
# Pools that need a package orderflow does not install.
OPTIONAL_POOLS = {"gevent", "eventlet"}


class Command(BaseCommand):
    help = "Start a Celery worker consuming the given queue(s) (sms, email, notifications, default)."

    def add_arguments(self, parser):
        parser.add_argument("--queue", "-Q", required=True, help="A queue, or a comma-separated list of queues.")
        parser.add_argument("--concurrency", "-c", type=int, default=2)
        parser.add_argument("--loglevel", "-l", default="info", choices=LOG_LEVELS, type=str.lower)
        parser.add_argument("--hostname", "-n", help="Node name; defaults to <queues>@%%h.")
        parser.add_argument("--pool", "-P", choices=POOLS, default="prefork")
        parser.add_argument(
            "--prefetch-multiplier",
            type=int,
            help="Messages reserved per process; defaults to 1 on sms and email so one slow send holds back nothing.",
        )
        parser.add_argument("--max-tasks-per-child", type=int, default=1000)

    def handle(self, *args, **options):
        # The `celery` command itself, not app.worker_main, which drops the worker's exit status:
        # a worker that could not start must not look to its supervisor like one that stopped cleanly.
        status = celery_command.main(args=["--app", app.main, *self.worker_argv(options)], standalone_mode=False)
        if status:
            raise SystemExit(status)

    def worker_argv(self, options) -> list[str]:
        known = {queue.name for queue in settings.CELERY_TASK_QUEUES}
        queues = [name.strip() for name in options["queue"].split(",") if name.strip()]
        unknown = sorted(set(queues) - known)
        if not queues or unknown:
            raise CommandError(
                f"--queue: unknown queue {', '.join(unknown) or '(empty)'}; choose from {', '.join(sorted(known))}."
            )
        if options["pool"] in OPTIONAL_POOLS and importlib.util.find_spec(options["pool"]) is None:
            raise CommandError(
                f"--pool {options['pool']} needs the {options['pool']} package: pip install {options['pool']}"
            )
        for option in ("concurrency", "max_tasks_per_child", "prefetch_multiplier"):
            if options[option] is not None and options[option] < 1:
                raise CommandError(f"--{option.replace('_', '-')} must be at least 1.")

        prefetch = options["prefetch_multiplier"]
        if prefetch is None:
            prefetch = 1 if CHANNEL_QUEUES & set(queues) else 4
        return [
            "worker",
            f"--queues={','.join(queues)}",
            f"--concurrency={options['concurrency']}",
            f"--loglevel={options['loglevel']}",
            f"--hostname={options['hostname'] or '-'.join(queues) + '@%h'}",
            f"--pool={options['pool']}",
            f"--prefetch-multiplier={prefetch}",
            f"--max-tasks-per-child={options['max_tasks_per_child']}",
        ]
