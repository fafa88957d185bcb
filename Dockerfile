# The one image for web, workers, beat and the migrate job; docker-compose.yml picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=orderflow.settings.production

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY . .
# Static files for the admin, served by whitenoise; the key is only for this build step.
RUN DJANGO_SECRET_KEY=collectstatic-only-not-used-at-run-time-0123456789abcdef \
    DJANGO_DEBUG=false python manage.py collectstatic --noinput \
 && useradd --create-home --uid 10001 orderflow \
 && mkdir /metrics && chown orderflow /metrics
# /metrics: PROMETHEUS_MULTIPROC_DIR in .env.example, writable by the processes with or without its volume.
USER orderflow

EXPOSE 8000
# --preload: the app loads once, before the workers fork. A bad variable stops gunicorn with its
# one line (exit 3) instead of three workers failing at once, and the workers share its memory.
CMD ["gunicorn", "orderflow.wsgi", "--preload", "--bind", "0.0.0.0:8000", "--workers", "3", "--access-logfile", "-", "--logger-class", "orderflow.gunicorn_logging.MaskedAccessLogger"]
