"""Settings for a developer's machine: everything from the environment, DEBUG on by default."""

from orderflow.settings.base import *  # noqa: F403
