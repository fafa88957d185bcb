from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from orderflow.connectivity import broker_error

HOW_TO_START = {
    "redis": "start one with `redis-server --daemonize yes` (Debian: apt-get install redis-server)",
    "amqp": "start one with `rabbitmq-server -detached` (Debian: apt-get install rabbitmq-server)",
}


class Command(BaseCommand):
    help = "Say in one line whether the Celery broker (CELERY_BROKER_URL) answers."

    def handle(self, *args, **options):
        url = settings.CELERY_BROKER_URL
        transport = "amqp" if url.startswith(("amqp", "pyamqp")) else "redis"
        shown, error = broker_error(url)
        if error is not None:
            raise CommandError(
                f"the broker at {shown} cannot be used ({error.__class__.__name__}: {error}); "
                f"if it is not running, {HOW_TO_START[transport]}; else check CELERY_BROKER_URL."
            )
        self.stdout.write(f"broker {shown} is reachable")
