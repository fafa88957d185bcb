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
        transport = "amqp" if url.startswith(("amqp", "pyamqp")) else "redis"
        connection = Connection(url, connect_timeout=3)
        try:
            connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=3)
        except Exception as error:  # kombu raises the transport's own errors
            raise CommandError(
                f"the broker at {connection.as_uri()} cannot be used ({error.__class__.__name__}: {error}); "
                f"if it is not running, {HOW_TO_START[transport]}; else check CELERY_BROKER_URL."
            ) from None
        finally:
            connection.release()
        self.stdout.write(f"broker {connection.as_uri()} is reachable")
