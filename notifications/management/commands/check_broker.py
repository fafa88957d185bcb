from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from kombu import Connection

HOW_TO_START = {
    "redis": "start one with `redis-server --daemonize yes` (Debian: apt-get install redis-server)",
    "amqp": "start one with `rabbitmq-server -detached` (Debian: apt-get install rabbitmq-server)",
}


class Command(BaseCommand):
    help = "Say in one line whether the Celery broker (CELERY_BROKER_URL) answers."

    def handle(self, *args, **options):
        url = settings.CELERY_BROKER_URL
        with Connection(url, connect_timeout=3) as connection:
            try:
                connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=3)
            except Exception as error:  # kombu raises the transport's own errors
                transport = (
                    "amqp" if connection.transport_cls in ("amqp", "pyamqp") or url.startswith("amqp") else "redis"
                )
                raise CommandError(
                    f"the broker at {connection.as_uri()} is unreachable ({error.__class__.__name__}); "
                    f"{HOW_TO_START[transport]}, or set CELERY_BROKER_URL."
                ) from None
        self.stdout.write(f"broker {connection.as_uri()} is reachable")
