from django.core.asgi import get_asgi_application

from orderflow.configuration import WEB_WORKER_BOOT_ERROR, exit_on_bad_configuration, use_settings_module

with exit_on_bad_configuration(WEB_WORKER_BOOT_ERROR):
    use_settings_module()
    application = get_asgi_application()
