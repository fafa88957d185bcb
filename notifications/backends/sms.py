import logging
import os
import uuid

import requests
from django.conf import settings
from requests.utils import get_environ_proxies
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from notifications.errors import PermanentDeliveryError, TransientDeliveryError

logger = logging.getLogger(__name__)

# Twilio error codes worth retrying: 20429 too many requests, 30001 queue overflow, and
# 20003 authentication: a wrong key is fixed by an operator, then every message can go.
# https://www.twilio.com/docs/api/errors
TRANSIENT_TWILIO_CODES = {20003, 20429, 30001}
TRANSIENT_HTTP_STATUSES = {401, 403, 429}
TWILIO_TIMEOUT_SECONDS = 10


class TwilioBackend:
    """Sends through Twilio's Messages API, or any API compatible with it (TWILIO_API_BASE_URL)."""

    def __init__(self):
        base_url = settings.TWILIO_API_BASE_URL.rstrip("/")
        # The environment's proxy (HTTPS_PROXY, NO_PROXY) and CA bundle (REQUESTS_CA_BUNDLE) are
        # read here, once per worker process: left to requests, every send would scan the
        # environment again, about a sixth of the CPU of each call.
        http_client = TwilioHttpClient(timeout=TWILIO_TIMEOUT_SECONDS, proxy=get_environ_proxies(base_url))
        http_client.session.trust_env = False
        http_client.session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        self.client = Client(settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN, http_client=http_client)
        self.client.api.base_url = base_url

    def send(self, *, recipient: str, body: str, **_) -> str:
        params = {"to": recipient, "body": body}
        if settings.TWILIO_MESSAGING_SERVICE_SID:
            params["messaging_service_sid"] = settings.TWILIO_MESSAGING_SERVICE_SID
        else:
            params["from_"] = settings.TWILIO_FROM_NUMBER
        if settings.TWILIO_STATUS_CALLBACK_URL:
            params["status_callback"] = settings.TWILIO_STATUS_CALLBACK_URL
        try:
            return self.client.messages.create(**params).sid
        except TwilioRestException as error:
            raise classify_twilio_error(error) from error
        except requests.RequestException as error:
            raise TransientDeliveryError(f"Twilio unreachable: {error.__class__.__name__}", code="network") from error


def classify_twilio_error(error: TwilioRestException):
    # Without a Twilio error code in the body, the library reports the HTTP status as the code.
    has_twilio_code = bool(error.code) and error.code != error.status
    code = f"twilio-{error.code}" if has_twilio_code else f"http-{error.status}"
    message = f"Twilio {error.code if has_twilio_code else f'HTTP {error.status}'}: {error.msg}"
    if error.code in TRANSIENT_TWILIO_CODES or error.status in TRANSIENT_HTTP_STATUSES or error.status >= 500:
        return TransientDeliveryError(message, code=code)
    return PermanentDeliveryError(message, code=code)


class ConsoleBackend:
    """Writes each SMS to the log instead of sending it: the default without Twilio credentials."""

    def send(self, *, recipient: str, body: str, **_) -> str:
        message_id = f"console-{uuid.uuid4().hex}"
        logger.info("SMS %s to %s: %s", message_id, recipient, body)
        return message_id


class InMemoryBackend:
    """Keeps sent messages in `outbox`, for tests of one process."""

    outbox: list[dict] = []

    def send(self, *, recipient: str, body: str, **_) -> str:
        message_id = f"mem-{uuid.uuid4().hex}"
        self.outbox.append({"id": message_id, "to": recipient, "body": body})
        return message_id
