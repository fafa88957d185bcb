"""API plumbing shared by every app: pagination and one JSON shape for every error.

Every error body has `detail` (a sentence a person can act on) and `code`; field problems
are listed under `errors`, keyed by field path (`items[1].quantity`), each a list of messages.
"""

import hmac
import logging
from functools import wraps

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from orderflow.errors import ApplicationError
from orderflow.parsers import whole_number

logger = logging.getLogger(__name__)

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
# Where every answer, errors included, is JSON; elsewhere (the admin) Django's pages.
JSON_PREFIXES = ("/api/", "/webhooks/", "/healthz", "/readyz", "/metrics")


class Pagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 200
    invalid_page_message = "Page {page_number} does not exist: {message}"

    def paginate_queryset(self, queryset, request, view=None):
        limits = {self.page_query_param: None, self.page_size_query_param: self.max_page_size}
        for name, most in limits.items():
            value = request.query_params.get(name)
            number = whole_number(value) if value is not None else None
            if name == self.page_query_param and number is None and value and value.isascii() and value.isdigit():
                # A whole number, past any page there can be.
                raise exceptions.NotFound(f"Page {value[:30]}{'…' if len(value) > 30 else ''} does not exist.")
            if value is not None and not (number is not None and 1 <= number <= (most or number)):
                span = f"from 1 to {most}" if most else "from 1"
                raise exceptions.ValidationError({name: [f"{name} must be a whole number {span}, not {value!r}."]})
        return super().paginate_queryset(queryset, request, view)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["schema"]["minimum"] = 1
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"]["maximum"] = self.max_page_size
        return parameters


NON_FIELD = "non_field_errors"


def flat_errors(errors, path: str = "") -> dict[str, list[str]]:
    """DRF's nested errors as one level: `{field path: [messages]}`, e.g. `items[1].quantity`.

    An error of the whole input stays under `non_field_errors`; one of a list or object inside
    it (an empty `items`) under that field's own path.
    """
    if isinstance(errors, dict):
        children = [(_child_path(path, key), value) for key, value in errors.items()]
    elif isinstance(errors, list):
        # A list of objects' errors (one per item, as DRF can give them) keeps each item's index.
        children = [
            (f"{path}[{index}]" if isinstance(value, dict) else path, value) for index, value in enumerate(errors)
        ]
    else:
        return {path or NON_FIELD: [str(errors)]} if errors else {}
    flat: dict[str, list[str]] = {}
    for child, value in children:
        for field, messages in flat_errors(value, child).items():
            flat.setdefault(field, []).extend(messages)
    return flat


def _child_path(path: str, key) -> str:
    if isinstance(key, int) or str(key).isdigit():
        return f"{path}[{key}]"
    if key == NON_FIELD:
        return path
    return f"{path}.{key}" if path else str(key)


def _first_message(errors: dict[str, list[str]]) -> str:
    """The first error as `field.path: message`, for the one-sentence `detail`."""
    for field, messages in errors.items():
        return messages[0] if field == NON_FIELD else f"{field}: {messages[0]}"
    return ""


def _error_body(detail: str, code: str, errors=None, **extra) -> dict:
    body = {"detail": detail, "code": code}
    if errors:
        body["errors"] = errors
    body.update(extra)
    return body


def exception_handler(exc, context):
    if isinstance(exc, ApplicationError):
        body = _error_body(exc.message, exc.code, exc.fields, **exc.extra)
        return Response(body, status=exc.status_code)
    if isinstance(exc, RequestDataTooBig):
        return body_too_large()
    if isinstance(exc, exceptions.NotAcceptable):
        # In JSON whatever the page's formats: the request named none it has, and DRF would
        # answer in the page's first (the schema's is YAML).
        return JsonResponse(_error_body(str(exc.detail), exc.detail.code), status=exc.status_code)
    if isinstance(exc, exceptions.UnsupportedMediaType) and (view := context.get("view")) is not None:
        taken = " or ".join(parser.media_type for parser in view.get_parsers())
        if str(exc.detail).startswith("Unsupported media type"):  # DRF's, which does not say what to send
            exc = exceptions.UnsupportedMediaType(None, detail=f"{exc.detail} Send the body as {taken}.")
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or None)
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()

    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        errors = flat_errors(response.data)
        summary = _first_message(errors) or "The request is not valid."
        response.data = _error_body(f"Invalid input. {summary}", "invalid", errors)
    elif isinstance(response.data, dict) and "detail" in response.data:
        code = getattr(response.data["detail"], "code", "error")
        response.data = _error_body(str(response.data["detail"]), code)
    return response


def allow_methods(*methods: str):
    """Answer only `methods`; any other gets a JSON 405 that names them.

    Django's own 405 has an empty body, and a POST to a GET-only view met the CSRF check's
    HTML page before it. A view allowing only safe methods is CSRF-exempt (it changes
    nothing), so that an unsafe one gets this 405; any other keeps the CSRF check.
    """

    def decorate(view):
        @wraps(view)
        def checked(request, *args, **kwargs):
            if request.method in methods:
                return view(request, *args, **kwargs)
            response = JsonResponse(
                _error_body(f"{request.method} is not allowed here; use {' or '.join(methods)}.", "method_not_allowed"),
                status=status.HTTP_405_METHOD_NOT_ALLOWED,
            )
            response["Allow"] = ", ".join(methods)
            return response

        return csrf_exempt(checked) if set(methods) <= SAFE_METHODS else checked

    return decorate


@csrf_exempt  # also the catch-all for unknown /api/ URLs, which may be POSTed to
def json_not_found(request, exception=None):
    return JsonResponse(_error_body(f"Nothing is at {request.path}.", "not_found"), status=status.HTTP_404_NOT_FOUND)


def json_server_error(request):
    return JsonResponse(
        _error_body("Something went wrong on our side; it has been logged.", "server_error"),
        status=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )


def json_bad_request(request, exception=None):
    return JsonResponse(
        _error_body("The request could not be understood.", "bad_request"), status=status.HTTP_400_BAD_REQUEST
    )


def unreadable_body(reason: str) -> JsonResponse:
    return JsonResponse(
        _error_body(f"The request body could not be read: {reason}", "bad_request"), status=status.HTTP_400_BAD_REQUEST
    )


def holds_metrics_token(request) -> bool:
    """Whether the request carries `Authorization: Bearer <METRICS_TOKEN>` (monitoring's credential)."""
    token = settings.METRICS_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
    given = given.strip() if scheme.lower() == "bearer" else ""  # the scheme is case-insensitive
    # As bytes: compare_digest refuses str holding anything but ASCII, and a header may.
    return bool(token and given and hmac.compare_digest(given.encode(), token.encode()))


def body_too_large() -> JsonResponse:
    return JsonResponse(
        _error_body(
            f"The request body is too large: at most {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.", "too_large"
        ),
        status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    )


def too_many_fields(where: str) -> JsonResponse:
    return JsonResponse(
        _error_body(
            f"Too many parameters in the {where}: at most {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS}.",
            "too_many_parameters",
        ),
        status=status.HTTP_400_BAD_REQUEST,
    )


def https_required(request) -> JsonResponse:
    return JsonResponse(
        _error_body(
            f"This API takes {request.method} requests over https only: send it to https:// with the same path. "
            "Nothing was done.",
            "https_required",
        ),
        status=status.HTTP_403_FORBIDDEN,
    )


def length_required() -> JsonResponse:
    return JsonResponse(
        _error_body(
            "Send the request body with a Content-Length header; a chunked body (Transfer-Encoding: chunked) "
            "is not read here.",
            "length_required",
        ),
        status=status.HTTP_411_LENGTH_REQUIRED,
    )
