"""The settings modules: `local` (the default), `production`, and `test` for the suite.

The package itself holds no settings. Named as DJANGO_SETTINGS_MODULE (as many projects'
`<project>.settings` is), Django would run with none of the apps; say so at start-up instead.
"""

import os

from orderflow.configuration import SETTINGS_MODULES, ConfigurationError

if os.environ.get("DJANGO_SETTINGS_MODULE", "").strip() == __name__:
    raise ConfigurationError(
        "DJANGO_SETTINGS_MODULE",
        f"{__name__!r} is the package of the settings modules, not one; use one of {', '.join(SETTINGS_MODULES)}",
    )
