#!/usr/bin/env python
import sys
import threading


def main():
    from django.conf import settings
    from django.core.management import execute_from_command_line

    from orderflow.configuration import exit_on_bad_configuration, use_settings_module

    with exit_on_bad_configuration():
        use_settings_module()
        settings.INSTALLED_APPS  # noqa: B018 - load and check the settings before anything runs

    from orderflow.connectivity import exit_if_database_unreachable

    default_thread_hook = threading.excepthook

    def thread_hook(failure):  # runserver runs its checks in a thread of its own
        exit_if_database_unreachable(failure.exc_value)
        default_thread_hook(failure)

    threading.excepthook = thread_hook
    try:
        execute_from_command_line(sys.argv)
    except Exception as error:
        exit_if_database_unreachable(error)
        raise


if __name__ == "__main__":
    main()
