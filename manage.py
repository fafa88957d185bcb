#!/usr/bin/env python
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orderflow.settings.local")
    from django.conf import settings
    from django.core.management import execute_from_command_line

    from orderflow.configuration import exit_on_bad_configuration

    with exit_on_bad_configuration():
        settings.INSTALLED_APPS  # noqa: B018 - load and check the settings before anything runs
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
