import os

from django.core.asgi import get_asgi_application

from orderflow.configuration import WEB_WORKER_BOOT_ERROR, exit_on_bad_configuration

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orderflow.settings.local")

with exit_on_bad_configuration(WEB_WORKER_BOOT_ERROR):
    application = get_asgi_application()
