"""Requests that fail for want of something other than the code: a 503 or a message, not a 500.

- The database unreachable (restarting, failed over): a 503 with Retry-After, so that an API
  client knows to try again (JSON; a page in the admin), and a line in the log.
- Under /api/ and the other JSON addresses: a body sent in chunks (Transfer-Encoding:
  chunked, no Content-Length) to a WSGI server, which Django reads as none, so that the API
  answered that fields the client sent were missing: a 411 says what to send instead. A query
  string or form body of more parameters than DATA_UPLOAD_MAX_NUMBER_FIELDS, or a form body
  over DATA_UPLOAD_MAX_MEMORY_SIZE: a 400 or 413 saying so. Met in a view it was a bare "could
  not be understood", and with DEBUG on a 500 (the debug page reads the parameters again).
- An admin list asked for with filters its database cannot apply: the list, with a message.
  The admin checks a filter's name, not its value: a NUL, an invalid regular expression or a
  year outside 1 to 9999 in the query string reaches the database or `datetime` and fails
  there, for every list, ours and the installed apps' alike. A hand-made action request whose
  selected rows are not ids fails the same way.
"""

import logging
import re

from django.conf import settings
from django.contrib import messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.options import IS_POPUP_VAR, TO_FIELD_VAR
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import (
    BadRequest,
    DisallowedHost,
    RequestDataTooBig,
    TooManyFieldsSent,
    TooManyFilesSent,
    ValidationError,
)
from django.db import DataError, InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.shortcuts import redirect
from django.urls import resolve
from django.utils.deprecation import MiddlewareMixin
from django.utils.http import urlencode

from orderflow import api
from orderflow.connectivity import database_error_line
from orderflow.errors import first_line

logger = logging.getLogger(__name__)

# What a value in a list's query string can make the ORM, `datetime` or the database raise.
BAD_FILTER_ERRORS = (DataError, OverflowError, ValueError, ValidationError)
# SQLite's answer when a function Django gives it fails on a value, e.g. REGEXP on "(".
SQLITE_FUNCTION_FAILED = "user-defined function raised exception"


def is_bad_filter_error(error: BaseException) -> bool:
    """Whether `error` is what a filter's value can cause, not a fault of the database or ours."""
    if isinstance(error, BAD_FILTER_ERRORS):
        return True
    return isinstance(error, OperationalError) and str(error) == SQLITE_FUNCTION_FAILED


SHOWN_QUERY_CHARACTERS = 200
# Kept on the way back to the list: they make it the picker of a related-object popup.
POPUP_PARAMETERS = (IS_POPUP_VAR, TO_FIELD_VAR)


# What health checks and Prometheus ask for by the process's own address (a pod's IP, a
# service name such as web:8000), a host no browser uses and DJANGO_ALLOWED_HOSTS need not list.
PROBE_PATH = re.compile(r"^/(healthz|readyz|metrics)/?$")


def probe_host_middleware(get_response):
    """Answers the probes whatever their Host header, which Django would refuse with a 400 (and
    log a traceback of) unless it is an allowed host: a Kubernetes probe to the pod's IP, or a
    scraper of web:8000, would find the process down. From a host not allowed, /metrics takes
    only its token: a staff login belongs to the site's own host names."""

    def middleware(request):
        if not PROBE_PATH.match(request.path_info) or _host_allowed(request):
            return get_response(request)
        request.user = AnonymousUser()
        match = resolve(request.path_info)
        return match.func(request, *match.args, **match.kwargs)

    return middleware


# Requests a redirect can repeat as they were: a client follows a 301 with a GET.
REDIRECTABLE_METHODS = {"GET", "HEAD", "OPTIONS"}


def api_over_https_middleware(get_response):
    """With SECURE_SSL_REDIRECT, Django answers a request over http with a 301 to https. A client
    following it turns a POST into a GET: an order placed over http came back as the list of
    orders under a 200, and was never placed. Under the JSON addresses a request that a redirect
    cannot repeat is refused instead, saying to use https (the probes answer over http: above)."""

    def middleware(request):
        if (
            settings.SECURE_SSL_REDIRECT
            and request.method not in REDIRECTABLE_METHODS
            and request.path.startswith(api.JSON_PREFIXES)
            and not request.is_secure()
        ):
            return api.https_required(request)
        return get_response(request)

    return middleware


def _host_allowed(request) -> bool:
    try:
        request.get_host()
    except DisallowedHost:
        return False
    return True


# Seconds a client is asked to wait before trying again while the database is away.
DATABASE_RETRY_AFTER_SECONDS = 30
# The URL an order is placed at (POST), where an Idempotency-Key makes a retry safe.
ORDER_CREATE_URL_NAME = "order-list"


class DatabaseUnavailableMiddleware(MiddlewareMixin):
    def process_exception(self, request, exception):
        if not isinstance(exception, OperationalError | InterfaceError) or is_bad_filter_error(exception):
            return None
        logger.error("database unavailable for %s %s: %s", request.method, request.path, database_error_line(exception))
        headers = {"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)}
        detail = "The service cannot reach its database just now. Try again shortly"
        if not request.path.startswith(api.JSON_PREFIXES):  # the admin, in a browser
            return HttpResponse(
                f"<!doctype html><title>Database unavailable</title><h1>Database unavailable</h1><p>{detail}: "
                "nothing was changed by this request.</p>",
                status=503,
                headers=headers,
            )
        if _places_an_order(request):
            detail += "; with the same Idempotency-Key a retried order is not placed twice"
        return JsonResponse({"detail": f"{detail}.", "code": "unavailable"}, status=503, headers=headers)


def _places_an_order(request) -> bool:
    match = request.resolver_match
    return request.method == "POST" and match is not None and match.url_name == ORDER_CREATE_URL_NAME


# Methods whose body a view reads: another's chunked body is left unread either way.
BODY_METHODS = {"POST", "PUT", "PATCH"}
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
# Only the webhooks take multipart forms (a receipt as a Twilio-compatible provider may post
# it); elsewhere DRF refuses them (415) before reading any file part they carry.
MULTIPART_CONTENT_TYPE = "multipart/form-data"
WEBHOOKS_PREFIX = "/webhooks/"


def request_limits_middleware(get_response):
    def middleware(request):
        if not request.path.startswith(api.JSON_PREFIXES):
            return get_response(request)
        if _chunked_body_unread(request):
            return api.length_required()
        # Parsed here, where their limits can be answered in words: the query string, and a
        # form body (a Twilio receipt; the API takes JSON, whose size its parser checks).
        try:
            request.GET  # noqa: B018
        except TooManyFieldsSent:
            return api.too_many_fields("query string")
        if request.content_type == FORM_CONTENT_TYPE or (
            request.content_type == MULTIPART_CONTENT_TYPE and request.path.startswith(WEBHOOKS_PREFIX)
        ):
            try:
                request.POST  # noqa: B018
            except TooManyFieldsSent:
                return api.too_many_fields("form body")
            except RequestDataTooBig:
                return api.body_too_large()
            except (BadRequest, MultiPartParserError, TooManyFilesSent) as error:  # e.g. a charset not UTF-8
                return api.unreadable_body(first_line(error))
        return get_response(request)

    return middleware


def _chunked_body_unread(request) -> bool:
    """A chunked body under WSGI, which Django reads as none (ASGI reads it whole)."""
    chunked = "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()
    return (
        chunked
        and request.method in BODY_METHODS
        and "wsgi.input" in request.META
        and not request.META.get("CONTENT_LENGTH")
    )


class AdminBadInputMiddleware(MiddlewareMixin):
    def process_exception(self, request, exception):
        model_admin = self._changelist_admin(request)
        if model_admin is None or not is_bad_filter_error(exception):
            return None
        if request.method == "GET" and request.GET:
            query = request.GET.urlencode()
            # An error: the filter may be fine and the fault ours, and the log must show it either way.
            logger.error("admin list %s refused its filters %s", request.path, query, exc_info=exception)
            messages.error(
                request,
                f"This list cannot be shown with the filters {query[:SHOWN_QUERY_CHARACTERS]!r} "
                f"({first_line(exception)}); here it is without them.",
            )
            kept = {name: request.GET[name] for name in POPUP_PARAMETERS if name in request.GET}
            return redirect(f"{request.path}?{urlencode(kept)}" if kept else request.path)
        if request.method == "POST" and self._selected_rows_are_not_ids(request, model_admin):
            logger.warning("admin action on %s sent rows that are not ids", request.path, exc_info=exception)
            messages.error(request, "The action did not run: the rows sent are not ids of this list.")
            return redirect(request.get_full_path())
        return None

    @staticmethod
    def _changelist_admin(request):
        """The ModelAdmin whose list this request is for, or None for any other page."""
        match = request.resolver_match
        if match is None or match.namespace != "admin" or not (match.url_name or "").endswith("_changelist"):
            return None
        return getattr(match.func, "model_admin", None)

    @staticmethod
    def _selected_rows_are_not_ids(request, model_admin) -> bool:
        primary_key = model_admin.model._meta.pk
        for value in request.POST.getlist(ACTION_CHECKBOX_NAME):
            try:
                primary_key.to_python(value)
            except ValidationError:
                return True
        return False
