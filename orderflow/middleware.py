"""An admin list asked for with filters its database cannot apply shows a message, not a 500.

The admin checks a filter's name, not its value: a NUL, an invalid regular expression or a
year past 9999 in the query string reaches the database or `datetime` and fails there, for
every list, ours and the installed apps' alike. A hand-made action request whose selected
rows are not ids fails the same way.
"""

import logging

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db import DataError
from django.shortcuts import redirect
from django.urls import reverse

logger = logging.getLogger(__name__)

BAD_VALUE_ERRORS = (DataError, OverflowError, ValueError, ValidationError)
SHOWN_QUERY_CHARACTERS = 200


class AdminBadInputMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        self.admin_prefix = None

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, BAD_VALUE_ERRORS) or not self._is_admin(request):
            return None
        reason = str(exception).splitlines()[0] if str(exception) else exception.__class__.__name__
        if request.method == "GET" and request.GET:
            # Only where the filters are the likely cause; without any, the error is ours and stays a 500.
            if isinstance(exception, ValueError):
                return None
            query = request.GET.urlencode()
            logger.warning("admin list %s refused its filters %s", request.path, query, exc_info=exception)
            messages.error(
                request,
                f"This list cannot be shown with the filters {query[:SHOWN_QUERY_CHARACTERS]!r} ({reason}); "
                "here it is without them.",
            )
            return redirect(request.path)
        if request.method == "POST" and "action" in request.POST:
            logger.error("admin action on %s failed on its input", request.path, exc_info=exception)
            messages.error(request, f"The action could not run on the rows sent: {reason}.")
            return redirect(request.get_full_path())
        return None

    def _is_admin(self, request) -> bool:
        if self.admin_prefix is None:
            self.admin_prefix = reverse("admin:index")
        return request.path.startswith(self.admin_prefix)
