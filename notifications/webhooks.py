"""Twilio delivery receipts: `/webhooks/twilio/status/`, checked with Twilio's own validator."""

import logging

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from twilio.request_validator import RequestValidator

from notifications import services
from orderflow.api import allow_methods
from orderflow.errors import ApplicationError

logger = logging.getLogger(__name__)

# The outcome of a receipt that met the database away and was handed to a worker.
APPLIED_LATER = "applied when the database is back"


def _signed_url(request) -> str:
    # Behind a proxy the URL Twilio signed is the public one we gave it, not the one we see.
    return settings.TWILIO_STATUS_CALLBACK_URL or request.build_absolute_uri()


@csrf_exempt  # Twilio signs its requests; it holds no session a forged form could use
@allow_methods("POST")
def twilio_status(request):
    signature = request.headers.get("X-Twilio-Signature", "")
    params = request.POST.dict()  # its size and number of fields checked by request_limits_middleware
    if not (
        settings.TWILIO_AUTH_TOKEN
        and signature
        and RequestValidator(settings.TWILIO_AUTH_TOKEN).validate(_signed_url(request), params, signature)
    ):
        logger.warning("twilio receipt refused: bad or missing signature")
        return JsonResponse({"detail": "Invalid or missing X-Twilio-Signature.", "code": "forbidden"}, status=403)
    sid, status = params.get("MessageSid", ""), params.get("MessageStatus", "")
    if not sid or not status:
        return JsonResponse({"detail": "MessageSid and MessageStatus are required.", "code": "invalid"}, status=400)
    receipt = {"provider_message_id": sid, "provider_status": status, "error_code": params.get("ErrorCode", "")}
    try:
        outcome = services.notification_record_receipt(**receipt)
    except ApplicationError as error:
        return JsonResponse(
            {"detail": error.message, "code": error.code, "errors": error.fields}, status=error.status_code
        )
    except (OperationalError, InterfaceError):
        # Twilio does not post a receipt again: a worker applies it when the database is back.
        if not services.notification_record_receipt_when_database_back(**receipt):
            raise  # a 503 (orderflow.middleware)
        return JsonResponse({"received": True, "outcome": APPLIED_LATER})
    answer = {"received": True, "outcome": outcome}
    if outcome == services.UNKNOWN_MESSAGE:  # perhaps not written down yet, and Twilio does not send it again
        tried_again_later = services.notification_record_receipt_later(**receipt)
        if tried_again_later is not None:
            answer["tried_again_later"] = tried_again_later
    return JsonResponse(answer)
