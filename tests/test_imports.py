"""Modules that settings name, imported first in a fresh process: a process that happens to import
one before anything else (Celery beat, a management command) must find it whole."""

import pytest
from django.conf import settings

from tests.processes import run_deployed


def _named_modules() -> list[str]:
    paths = []
    for value in settings.REST_FRAMEWORK.values():
        for path in value if isinstance(value, list | tuple) else [value]:
            if isinstance(path, str) and path.startswith("orderflow."):
                paths.append(path.rpartition(".")[0])
    return sorted(set(paths))


@pytest.mark.parametrize("module", _named_modules())
def test_a_module_rest_framework_settings_name_imports_before_anything_else(module):
    """DRF's APIView reads DEFAULT_CONTENT_NEGOTIATION_CLASS as it is defined: a module naming a
    class there that imported rest_framework.views would import itself half-made."""
    script = (
        "import django; django.setup(); "
        f"import {module}; "
        "from rest_framework.settings import DEFAULTS, api_settings; "
        "[getattr(api_settings, name) for name in DEFAULTS]"
    )
    result = run_deployed("-c", script, DJANGO_SETTINGS_MODULE="orderflow.settings.local")
    assert result.returncode == 0, result.stderr[-2000:]
