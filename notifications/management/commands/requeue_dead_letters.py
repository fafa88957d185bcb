"""Requeue dead letters from a script:

python manage.py requeue_dead_letters --queue sms --since 2h --dry-run
python manage.py requeue_dead_letters --queue sms --since 2h --by alice
"""

import argparse
import datetime
import re
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.text import Truncator

from notifications.dead_letters import dead_letters_requeue, to_suppressed_recipients
from notifications.models import DeadLetter, DeadLetterStatus
from orderflow.celery import app

# Dead letters a dry run lists one by one; the causes are counted over all of them.
SHOWN = 20
DURATION = re.compile(r"^(\d+)([mhd])$")
UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def parse_since(value: str):
    """`30m`, `6h`, `2d`, an ISO date or an ISO date-time (UTC unless it says otherwise)."""
    hint = f"{value!r}: write 30m, 6h, 2d, 2026-11-24 or 2026-11-24T08:00"
    try:
        if match := DURATION.match(value.strip()):
            return timezone.now() - timedelta(**{UNITS[match.group(2)]: int(match.group(1))})
        moment = parse_datetime(value)
        if moment is None and (day := parse_date(value)):
            moment = timezone.datetime(day.year, day.month, day.day)
    except OverflowError:  # a duration back past year 1
        raise argparse.ArgumentTypeError(f"{hint} (that reaches back before any date)") from None
    except ValueError as error:  # 2026-02-30
        raise argparse.ArgumentTypeError(f"{hint} ({error})") from None
    if moment is None:
        raise argparse.ArgumentTypeError(hint)
    return moment if timezone.is_aware(moment) else timezone.make_aware(moment, datetime.UTC)


class Command(BaseCommand):
    help = "Requeue dead letters still waiting for an operator, optionally only some of them."

    def add_arguments(self, parser):
        parser.add_argument("--queue", help="Only dead letters from this queue (sms, email, ...).")
        parser.add_argument("--task", help="Only this task, e.g. notifications.tasks.send_sms_notification.")
        parser.add_argument("--since", type=parse_since, help="Only those that last failed since: 6h, 2d or a date.")
        parser.add_argument("--dry-run", action="store_true", help="Say what would be requeued; change nothing.")
        parser.add_argument(
            "--by", metavar="USERNAME", help="Who requeues them (a user's name): their history names them. Needed."
        )

    def handle(self, *args, queue=None, task=None, since=None, dry_run=False, by=None, **options):
        # A mistyped name would match nothing and look like "nothing to requeue".
        queues = sorted(queue.name for queue in settings.CELERY_TASK_QUEUES)
        if queue and queue not in queues:
            raise CommandError(f"--queue: no queue {queue!r}; the queues are {', '.join(queues)}.")
        app.loader.import_default_modules()  # the tasks of every app, as a worker knows them
        if task and task not in app.tasks:
            raise CommandError(f"--task: no task {task!r}; e.g. notifications.tasks.send_sms_notification.")
        operator = None
        if not dry_run:
            if not by:
                raise CommandError("--by: say who requeues them (a username), for the dead letters' history.")
            operator = get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: by}).first()
            if operator is None:
                raise CommandError(f"--by: no user {by!r}.")
        letters = DeadLetter.objects.filter(status=DeadLetterStatus.DEAD)
        if queue:
            letters = letters.filter(queue=queue)
        if task:
            letters = letters.filter(task_name=task)
        if since:
            letters = letters.filter(last_failed_at__gte=since)
        ids = list(letters.order_by("pk").values_list("pk", flat=True))
        if dry_run:
            self.stdout.write(f"{len(ids)} dead letter(s) would be requeued (dry run, nothing changed).")
            if suppressed := to_suppressed_recipients(letters).count():
                self.stdout.write(
                    f"{suppressed} of them go to a suppressed recipient and would be left alone: a requeue never "
                    "lifts a suppression (lift it in the admin's Suppressions first)."
                )
            self._list(letters, total=len(ids))
            return
        outcome = dead_letters_requeue(ids=ids, by=operator)
        self.stdout.write(f"{outcome.requeued} dead letter(s) requeued, {len(outcome.skipped)} left alone.")
        for pk, reason in list(outcome.skipped.items())[:20]:
            self.stdout.write(f"  {pk}: {reason}")

    def _list(self, letters, *, total: int):
        """Each cause with its count, largest first, then the first dead letters themselves."""
        causes = letters.values("queue", "error_code", "exception_type").annotate(count=Count("pk")).order_by("-count")
        for cause in causes:
            reason = cause["error_code"] or cause["exception_type"].rpartition(".")[2]
            self.stdout.write(f"  {cause['count']} from queue {cause['queue']}: {reason}")
        shown = letters.select_related("notification").order_by("pk")[:SHOWN]
        for letter in shown:
            order = f"order #{letter.notification.order_id}" if letter.notification else "no notification"
            reason = Truncator(letter.message.partition("\n")[0]).chars(100)
            when = f"{letter.last_failed_at:%Y-%m-%d %H:%M} UTC"
            self.stdout.write(f"  #{letter.pk} {letter.queue}, {order}, last failed {when}: {reason}")
        if (more := total - len(shown)) > 0:
            self.stdout.write(f"  … and {more} more.")
