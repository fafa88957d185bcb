import json
import logging
import os
import threading
import uuid
from http import HTTPStatus
from urllib.parse import unquote, urlencode, urlsplit

import certifi
import urllib3
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from requests.utils import get_environ_proxies, prepend_scheme_if_needed, select_proxy
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http import HttpClient
from twilio.http.response import Response
from twilio.rest import Client

from notifications.errors import PermanentDeliveryError, TransientDeliveryError

logger = logging.getLogger(__name__)

# Twilio error codes worth retrying: 20429 too many requests, 30001 queue overflow; and 20003
# authentication (retried, naming the settings): a wrong key is fixed by an operator, then
# every message can go. https://www.twilio.com/docs/api/errors
TRANSIENT_TWILIO_CODES = {20429, 30001}
CREDENTIALS_REFUSED = 20003
TRANSIENT_HTTP_STATUSES = {401, 403, 429}
# Twilio saying the account sends too fast: 20429 too many requests, 30001 its queue overflowed.
THROTTLING_TWILIO_CODES = {20429, 30001}
# Twilio refusing the number itself, whatever is sent: 21610 it replied STOP (unsubscribed),
# 21614 it is not a mobile number. The recipient is suppressed (Suppression).
RECIPIENT_REFUSING_TWILIO_CODES = {21610, 21614}
TWILIO_TIMEOUT_SECONDS = 10
# Connections kept open to the API's host by one worker process; it sends one message at a
# time, the spare ones serve an SMS sent from a management command or a shell in the same process.
TWILIO_POOL_SIZE = 4
JSON_CONTENT_TYPES = {"application/json", "application/scim+json"}
PROXY_SCHEMES = {"http", "https"}


class Urllib3HttpClient(HttpClient):
    """The twilio library's HTTP client on urllib3's connection pool, without a requests session
    (docs/PERFORMANCE.md has what that saves a send).

    It honours the environment as requests does, read once: the proxy for the API's host
    (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY; a proxy URL's credentials go to the proxy)
    and the CA bundle (REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE, a file or a directory; else
    certifi's). A POST is never retried here: it may have reached Twilio, and the task's retry
    policy decides.
    """

    def __init__(self, *, base_url: str, timeout: float):
        super().__init__(logging.getLogger("twilio.http_client"), False, timeout)
        # Each thread's last answer (the threads, gevent and eventlet pools send several at
        # once through one client): its headers say when to try again (Retry-After).
        self._answers = threading.local()
        proxy_url = select_proxy(base_url, get_environ_proxies(base_url))
        ca_certs = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()
        options = {"maxsize": TWILIO_POOL_SIZE, "retries": False, "cert_reqs": "CERT_REQUIRED"}
        options["ca_cert_dir" if os.path.isdir(ca_certs) else "ca_certs"] = ca_certs
        if not proxy_url:
            self.pool = urllib3.PoolManager(**options)
            return
        proxy = urlsplit(prepend_scheme_if_needed(proxy_url, "http"))
        if proxy.scheme not in PROXY_SCHEMES:
            raise ImproperlyConfigured(
                f"the proxy for {base_url} ({proxy.scheme}://{proxy.hostname}) is not an http:// or https:// proxy;"
                " check HTTPS_PROXY, HTTP_PROXY and ALL_PROXY"
            )
        if proxy.username:  # requests sends a proxy's credentials from its URL; urllib3 wants them as a header
            credentials = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}"
            options["proxy_headers"] = urllib3.make_headers(proxy_basic_auth=credentials)
            proxy = proxy._replace(netloc=proxy.netloc.rpartition("@")[2])
        self.pool = urllib3.ProxyManager(proxy.geturl(), **options)

    @property
    def last_response(self) -> Response | None:
        return getattr(self._answers, "last", None)

    @last_response.setter
    def last_response(self, response: Response | None) -> None:
        self._answers.last = response

    def request(
        self, method, url, params=None, data=None, headers=None, auth=None, timeout=None, allow_redirects=False
    ) -> Response:
        headers = dict(headers or {})
        if auth is not None:
            headers.update(urllib3.make_headers(basic_auth=":".join(auth)))
        if params:
            url = f"{url}{'&' if '?' in url else '?'}{urlencode(params, doseq=True)}"
        body = None
        if data:
            # As the library's own client: JSON where the library asks for it, else a form.
            json_body = headers.get("Content-Type") in JSON_CONTENT_TYPES
            body = json.dumps(data) if json_body else urlencode(data, doseq=True)
        if self.logger.isEnabledFor(logging.INFO):
            self.log_request({"method": method.upper(), "url": url, "params": None, "headers": headers})
        answer = self.pool.request(
            method.upper(),
            url,
            body=body,
            headers=headers,
            timeout=timeout or self.timeout,
            redirect=allow_redirects,
        )
        response = Response(answer.status, answer.data.decode("utf-8", errors="replace"), answer.headers)
        self._answers.last = response
        if self.logger.isEnabledFor(logging.INFO):
            self.log_response(answer.status, response)
        return response


class TwilioBackend:
    """Sends through Twilio's Messages API, or any API compatible with it (TWILIO_API_BASE_URL)."""

    def __init__(self):
        base_url = settings.TWILIO_API_BASE_URL.rstrip("/")
        http_client = Urllib3HttpClient(base_url=base_url, timeout=TWILIO_TIMEOUT_SECONDS)
        self.client = Client(settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN, http_client=http_client)
        self.client.api.base_url = base_url
        # The Messages API's modules load here, not at the first send: a worker builds its
        # backends before its pool processes fork (notifications.tasks), and they share them.
        self.messages = self.client.messages

    def send(self, *, recipient: str, body: str, **_) -> str:
        params = {"to": recipient, "body": body}
        if settings.TWILIO_MESSAGING_SERVICE_SID:
            params["messaging_service_sid"] = settings.TWILIO_MESSAGING_SERVICE_SID
        else:
            params["from_"] = settings.TWILIO_FROM_NUMBER
        if settings.TWILIO_STATUS_CALLBACK_URL:
            params["status_callback"] = settings.TWILIO_STATUS_CALLBACK_URL
        http_client = self.client.http_client
        http_client.last_response = None
        try:
            sid = self.messages.create(**params).sid
        except TwilioRestException as error:
            raise classify_twilio_error(error, retry_after=retry_after_seconds(http_client.last_response)) from error
        except TwilioServiceException as error:  # the same answer in RFC 9457's shape
            raise classify_twilio_error(
                TwilioRestException(error.status, error.uri, msg=error.detail or error.title, code=error.code),
                retry_after=retry_after_seconds(http_client.last_response),
            ) from error
        except urllib3.exceptions.ReadTimeoutError as error:
            # The request went out: Twilio may have taken it. Retried as any network error (README: Never twice).
            raise TransientDeliveryError(
                f"Twilio did not answer within {TWILIO_TIMEOUT_SECONDS:g} s at {settings.TWILIO_API_BASE_URL}",
                code="timeout",
            ) from error
        except urllib3.exceptions.HTTPError as error:
            raise TransientDeliveryError(
                f"Twilio unreachable at {settings.TWILIO_API_BASE_URL}: {error.__class__.__name__}", code="network"
            ) from error
        except Exception as error:
            answer = http_client.last_response
            if answer is None or not 200 <= answer.status_code < 300:
                raise
            return accepted_without_a_readable_sid(answer, f"{error.__class__.__name__}: {str(error)[:200]}")
        if isinstance(sid, str) and sid:
            return sid
        return accepted_without_a_readable_sid(http_client.last_response, "no sid in it")


def accepted_without_a_readable_sid(answer: Response, why: str) -> str:
    """A 2xx answer the twilio library could not read a message sid from.

    A 201 is Twilio's "created": the message is sent, whatever the body holds (not JSON, not an
    object, a field the library cannot read), and trying again would send it twice. Any other
    2xx without a sid (200 and a web page: a proxy or a default site at TWILIO_API_BASE_URL)
    does not come from Twilio's API: the message went nowhere, and is dead until the setting
    is corrected and it is requeued.
    """
    message_id = accepted_message_id(answer.text)
    if not message_id and answer.status_code != HTTPStatus.CREATED:
        content_type = (answer.headers or {}).get("Content-Type", "no content type")
        raise PermanentDeliveryError(
            f"Twilio HTTP {answer.status_code}: an answer without a message sid ({content_type}); the server at "
            "TWILIO_API_BASE_URL does not answer as Twilio's API: check it",
            code=f"http-{answer.status_code}",
        )
    logger.warning(
        "Twilio accepted an SMS with an answer the twilio library could not read (%s); it is recorded with the id %r",
        why,
        message_id,
    )
    return message_id


def accepted_message_id(text: str) -> str:
    """The message's sid in an answer the twilio library could not read, if it holds one."""
    try:
        answer = json.loads(text)
    except ValueError:
        return ""
    sid = answer.get("sid") if isinstance(answer, dict) else None
    return sid if isinstance(sid, str) else ""


def retry_after_seconds(response: Response | None) -> float | None:
    """Seconds the answer's Retry-After asks for (a number of seconds or an HTTP date), if any."""
    value = response.headers.get("Retry-After") if response is not None and response.headers else None
    if not value:
        return None
    try:
        return urllib3.util.Retry(total=False).parse_retry_after(value)
    except urllib3.exceptions.InvalidHeader:
        logger.warning("Twilio answered with a Retry-After that is not a time: %r", value[:80])
        return None


def classify_twilio_error(error: TwilioRestException, *, retry_after: float | None = None):
    # Without a Twilio error code in the body, the library reports the HTTP status as the code.
    has_twilio_code = bool(error.code) and error.code != error.status
    code = f"twilio-{error.code}" if has_twilio_code else f"http-{error.status}"
    message = f"Twilio {error.code if has_twilio_code else f'HTTP {error.status}'}: {error.msg}"
    if error.code == CREDENTIALS_REFUSED or (error.status == 401 and not has_twilio_code):
        return TransientDeliveryError(
            f"{message}; Twilio refused the credentials: check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN",
            code=code,
            setting_to_fix="TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN",
        )
    if error.code in TRANSIENT_TWILIO_CODES or error.status in TRANSIENT_HTTP_STATUSES or error.status >= 500:
        throttled = error.status == 429 or error.code in THROTTLING_TWILIO_CODES
        return TransientDeliveryError(message, code=code, retry_after=retry_after, throttled=throttled)
    if error.status == 404 and not has_twilio_code:
        # Twilio names a missing resource (20404): a bare 404 comes from a server that is not it.
        message += "; the server at TWILIO_API_BASE_URL does not answer as Twilio's API: check it"
    elif 300 <= error.status < 400:  # a POST is not followed: it could be sent twice
        message += "; the server at TWILIO_API_BASE_URL redirects elsewhere: set it to the API's own address"
    return PermanentDeliveryError(message, code=code, refuses_recipient=error.code in RECIPIENT_REFUSING_TWILIO_CODES)


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
