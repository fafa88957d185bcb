import contextlib
import re
import smtplib
import socket
import subprocess
import threading
import time
from base64 import b64encode
from email.utils import formatdate

import pytest
from django.core.exceptions import ImproperlyConfigured
from twilio.base.exceptions import TwilioRestException

from notifications import services
from notifications.backends import sms
from notifications.backends import smtp as bounded_smtp
from notifications.backends.email import EmailBackend, classify_smtp_reply
from notifications.backends.sms import TwilioBackend, classify_twilio_error
from notifications.errors import PermanentDeliveryError, TransientDeliveryError
from orderflow.configuration import Rate
from tests.factories import place_order
from tests.fakes.smtp_server import FakeSMTP
from tests.fakes.twilio_server import FakeTwilio

SID, TOKEN = "ACunit000000000000000000000000000", "unit-token"


@pytest.fixture
def twilio(settings):
    server = FakeTwilio(account_sid=SID, auth_token=TOKEN).start()
    settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN = SID, TOKEN
    settings.TWILIO_API_BASE_URL = server.url
    settings.TWILIO_FROM_NUMBER = "+15005550006"
    settings.TWILIO_MESSAGING_SERVICE_SID = ""
    settings.TWILIO_STATUS_CALLBACK_URL = ""
    yield server
    server.stop()


def test_twilio_backend_sends_through_the_configured_base_url(twilio):
    sid = TwilioBackend().send(recipient="+14155552671", body="hello")
    [request] = twilio.requests
    assert sid.startswith("SM")
    assert (request["To"], request["From"], request["Body"]) == ("+14155552671", "+15005550006", "hello")
    assert "StatusCallback" not in request


def test_twilio_backend_passes_status_callback_and_messaging_service(twilio, settings):
    settings.TWILIO_STATUS_CALLBACK_URL = "https://shop.example/webhooks/twilio/status/"
    settings.TWILIO_MESSAGING_SERVICE_SID = "MG123"
    TwilioBackend().send(recipient="+14155552671", body="hello")
    [request] = twilio.requests
    assert request["StatusCallback"] == "https://shop.example/webhooks/twilio/status/"
    assert request["MessagingServiceSid"] == "MG123"
    assert "From" not in request


@pytest.mark.parametrize(
    ("answer", "error", "code"),
    [
        (500, TransientDeliveryError, "http-500"),
        (503, TransientDeliveryError, "http-503"),
        (429, TransientDeliveryError, "twilio-20429"),
        ((400, 30001), TransientDeliveryError, "twilio-30001"),
        ((400, 21211), PermanentDeliveryError, "twilio-21211"),
        ((400, 21614), PermanentDeliveryError, "twilio-21614"),
        ((400, 21610), PermanentDeliveryError, "twilio-21610"),
        ((400, 21408), PermanentDeliveryError, "twilio-21408"),
        ((404, 20404), PermanentDeliveryError, "twilio-20404"),
        (499, PermanentDeliveryError, "http-499"),  # a status with no name still reaches the client
    ],
)
def test_twilio_answers_are_classified(twilio, answer, error, code):
    twilio.script("+14155552671", answer)
    with pytest.raises(error) as raised:
        TwilioBackend().send(recipient="+14155552671", body="hello")
    assert raised.value.code == code
    assert isinstance(raised.value.__cause__, TwilioRestException)


@pytest.mark.parametrize(("code", "refuses"), [(21610, True), (21614, True), (21211, False), (21408, False)])
def test_twilio_refusing_the_number_itself_says_so(twilio, code, refuses):
    """Unsubscribed (21610) or not a mobile (21614): nothing more should go to that number.
    21408 is about the account's regions, fixed by an operator; 21211 is about how it was written."""
    twilio.script("+14155552671", (400, code))
    with pytest.raises(PermanentDeliveryError) as raised:
        TwilioBackend().send(recipient="+14155552671", body="hello")
    assert raised.value.refuses_recipient is refuses


@pytest.mark.parametrize(
    ("answer", "retry_after", "throttled"),
    [
        ((429, 20429, {"Retry-After": "7"}), 7, True),
        ((429, None, {"Retry-After": " 12 "}), 12, True),
        (429, None, True),
        ((400, 30001), None, True),
        ((503, None, {"Retry-After": "120"}), 120, False),
        (500, None, False),
        ((503, None, {"Retry-After": "when the moon is full"}), None, False),
    ],
)
def test_twilio_asking_to_wait_says_how_long_and_whether_the_sends_come_too_fast(
    twilio, answer, retry_after, throttled
):
    twilio.script("+14155552671", answer)
    with pytest.raises(TransientDeliveryError) as raised:
        TwilioBackend().send(recipient="+14155552671", body="hello")
    assert (raised.value.retry_after, raised.value.throttled) == (retry_after, throttled)


def test_twilio_retry_after_as_a_date_is_read_as_the_seconds_until_it(twilio):
    then = formatdate(time.time() + 90, usegmt=True)
    twilio.script("+14155552671", (429, 20429, {"Retry-After": then}))
    with pytest.raises(TransientDeliveryError) as raised:
        TwilioBackend().send(recipient="+14155552671", body="hello")
    assert 85 <= raised.value.retry_after <= 90


def test_a_retry_after_belongs_to_the_answer_that_carried_it(twilio):
    """The backend's HTTP client is reused; an earlier answer's Retry-After is not read again."""
    backend = TwilioBackend()
    twilio.script("+14155552671", (429, 20429, {"Retry-After": "30"}), 500)
    for expected in (30, None):
        with pytest.raises(TransientDeliveryError) as raised:
            backend.send(recipient="+14155552671", body="hello")
        assert raised.value.retry_after == expected


def test_one_threads_answer_is_not_read_by_another_sharing_the_backend(twilio):
    """The threads, gevent and eventlet pools send through one backend from several threads at once."""
    backend = TwilioBackend()
    twilio.script("+14155552671", (429, 20429, {"Retry-After": "30"}))
    with pytest.raises(TransientDeliveryError):
        backend.send(recipient="+14155552671", body="hello")
    seen_elsewhere = []
    reader = threading.Thread(target=lambda: seen_elsewhere.append(backend.client.http_client.last_response))
    reader.start()
    reader.join()
    assert seen_elsewhere == [None]
    assert backend.client.http_client.last_response.headers["Retry-After"] == "30"


def test_unreachable_twilio_is_transient_and_names_where_it_was_looked_for(twilio, settings):
    settings.TWILIO_API_BASE_URL = "http://127.0.0.1:1"
    with pytest.raises(TransientDeliveryError) as raised:
        TwilioBackend().send(recipient="+14155552671", body="hello")
    assert raised.value.code == "network"
    assert raised.value.message.startswith("Twilio unreachable at http://127.0.0.1:1: ")


def test_refused_credentials_are_retried_naming_the_settings_to_fix(twilio, settings):
    settings.TWILIO_AUTH_TOKEN = "not-the-token"
    with pytest.raises(TransientDeliveryError) as raised:
        TwilioBackend().send(recipient="+14155552671", body="hello")
    assert raised.value.code == "twilio-20003"
    assert raised.value.message.endswith(
        "; Twilio refused the credentials: check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"
    )
    assert raised.value.setting_to_fix == "TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN"
    assert twilio.requests == []  # refused: nothing was sent


@pytest.fixture
def proxy_environment(monkeypatch):
    """A proxy that refuses every connection, as the environment names it."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")
    return monkeypatch


def test_twilio_backend_sends_through_the_environments_proxy(twilio, proxy_environment):
    backend = TwilioBackend()
    with pytest.raises(TransientDeliveryError, match="ProxyError"):
        backend.send(recipient="+14155552671", body="hello")
    assert twilio.requests == []


def test_twilio_backend_goes_direct_to_hosts_the_environment_exempts(twilio, proxy_environment):
    proxy_environment.setenv("NO_PROXY", "127.0.0.1")
    TwilioBackend().send(recipient="+14155552671", body="hello")
    assert len(twilio.requests) == 1


def serving_http(answer) -> socket.socket:
    """A listener on loopback that reads each request (its head, and its body by Content-Length),
    gives the head to `answer`, sends back what `answer` returns and closes; until it is closed."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        with contextlib.suppress(OSError):  # the listener closed: the test is over
            while True:
                connection, _ = listener.accept()
                with connection:
                    data = b""
                    while b"\r\n\r\n" not in data and (chunk := connection.recv(65536)):
                        data += chunk
                    head, _, body = data.partition(b"\r\n\r\n")
                    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                    while length and len(body) < int(length.group(1)) and (chunk := connection.recv(65536)):
                        body += chunk
                    connection.sendall(answer(head.decode("latin-1")))

    threading.Thread(target=serve, daemon=True).start()
    return listener


@pytest.fixture
def recording_proxy():
    """A proxy that notes the head of every request it is sent and answers 502 Bad Gateway."""
    heads = []

    def answer(head: str) -> bytes:
        heads.append(head)
        return b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

    listener = serving_http(answer)
    yield f"127.0.0.1:{listener.getsockname()[1]}", heads
    listener.close()


@pytest.mark.parametrize(
    ("variable", "url"),
    [
        ("HTTP_PROXY", "http://shop%40example:s%3Acret@{address}"),
        ("ALL_PROXY", "http://shop%40example:s%3Acret@{address}"),
        ("HTTP_PROXY", "shop%40example:s%3Acret@{address}"),  # no scheme: http, as requests reads it
    ],
)
def test_twilio_backend_asks_the_environments_proxy_with_its_credentials(
    twilio, proxy_environment, recording_proxy, variable, url
):
    address, heads = recording_proxy
    proxy_environment.delenv("HTTP_PROXY")
    proxy_environment.setenv(variable, url.format(address=address))
    with pytest.raises(TransientDeliveryError, match="502"):
        TwilioBackend().send(recipient="+14155552671", body="hello")
    [head] = heads
    request_line, *lines = head.split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    assert request_line == f"POST {twilio.url}/2010-04-01/Accounts/{SID}/Messages.json HTTP/1.1"
    assert headers["proxy-authorization"] == f"Basic {b64encode(b'shop@example:s:cret').decode()}"
    assert twilio.requests == []


def test_a_proxy_that_is_not_http_is_refused_with_the_variables_to_check(twilio, proxy_environment):
    proxy_environment.setenv("HTTP_PROXY", "socks5://127.0.0.1:1080")
    with pytest.raises(ImproperlyConfigured, match="HTTPS_PROXY, HTTP_PROXY and ALL_PROXY"):
        TwilioBackend()


@pytest.fixture
def twilio_over_tls(settings, tmp_path, monkeypatch):
    """The Twilio double over HTTPS, with a certificate for 127.0.0.1 that no public CA signed."""
    certificate = tmp_path / "twilio.pem"
    subprocess.run(
        [  # noqa: S607
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", certificate, "-out", certificate,
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    server = FakeTwilio(account_sid=SID, auth_token=TOKEN, certfile=str(certificate)).start()
    settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN = SID, TOKEN
    settings.TWILIO_API_BASE_URL = server.url
    settings.TWILIO_FROM_NUMBER = "+15005550006"
    yield server, certificate
    server.stop()


def test_twilio_taking_the_request_and_not_answering_is_a_timeout(settings, monkeypatch):
    listener = socket.create_server(("127.0.0.1", 0))  # accepts (the kernel's backlog), never answers
    monkeypatch.setattr(sms, "TWILIO_TIMEOUT_SECONDS", 0.3)
    settings.TWILIO_API_BASE_URL = f"http://127.0.0.1:{listener.getsockname()[1]}"
    with listener, pytest.raises(TransientDeliveryError) as raised:
        TwilioBackend().send(recipient="+14155552671", body="hello")
    assert (raised.value.code, raised.value.message) == (
        "timeout",
        f"Twilio did not answer within 0.3 s at {settings.TWILIO_API_BASE_URL}",
    )


def test_twilio_backend_verifies_tls_with_the_environments_ca_bundle(twilio_over_tls, monkeypatch):
    server, certificate = twilio_over_tls
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificate))
    assert TwilioBackend().send(recipient="+14155552671", body="hello").startswith("SM")
    assert server.url.startswith("https://") and len(server.requests) == 1


def test_twilio_backend_refuses_a_certificate_no_trusted_ca_signed(twilio_over_tls):
    server, _ = twilio_over_tls
    with pytest.raises(TransientDeliveryError, match="SSLError") as raised:
        TwilioBackend().send(recipient="+14155552671", body="hello")
    assert raised.value.code == "network"
    assert server.requests == []


def test_twilio_error_without_code_uses_http_status():
    error = classify_twilio_error(TwilioRestException(502, "uri", msg="Bad gateway"))
    assert (type(error), error.code) == (TransientDeliveryError, "http-502")


@pytest.mark.parametrize(
    ("code", "error"), [(421, TransientDeliveryError), (451, TransientDeliveryError), (550, PermanentDeliveryError)]
)
def test_smtp_replies_are_classified(code, error):
    assert type(classify_smtp_reply(code, b"reason", what="x")) is error


@pytest.mark.parametrize(("code", "throttled"), [(421, True), (450, False), (451, False), (452, False)])
def test_only_a_busy_smtp_server_pauses_the_email_channel(code, throttled):
    """421 speaks for the server (too busy, too many messages); 45x for one recipient (greylisting,
    a full mailbox), which should not hold everybody else's email."""
    assert classify_smtp_reply(code, b"4.7.0 try again later", what="x").throttled is throttled


@pytest.mark.parametrize(
    ("reply", "refuses"),
    [
        ("550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown", True),
        ("553 5.1.3 Bad recipient address syntax", True),
        ("551 5.1.6 User has moved; no forwarding", True),
        ("550 5.1.10 Recipient address has null MX", True),
        ("550 5.7.1 Relaying denied", False),  # about us, not the address
        ("550 5.1.0 <orders@shop.example>: Sender address rejected: User unknown", False),  # Postfix, at RCPT TO
        ("550 5.1.8 Access denied, bad outbound sender", False),
        ("550 5.1.1 <orders@shop.example>: Sender address rejected: not owned by user", False),
        ("554 5.7.1 Service unavailable; client host blocked", False),
        ("552 5.2.2 Mailbox full", False),  # it empties
        ("550 Requested action not taken: mailbox unavailable", False),  # no enhanced status: cannot tell
    ],
)
def test_an_smtp_refusal_of_the_address_itself_says_so(smtp, reply, refuses):
    smtp.script("gone@example.com", reply)
    with pytest.raises(PermanentDeliveryError) as raised:
        EmailBackend().send(recipient="gone@example.com", subject="Hi", body="plain")
    assert raised.value.refuses_recipient is refuses


def test_a_refusal_after_the_recipient_was_accepted_suppresses_nobody():
    assert classify_smtp_reply(550, b"5.1.1 user unknown", what="SMTP error").refuses_recipient is False


@pytest.fixture
def smtp(settings):
    server = FakeSMTP().start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"  # what EMAIL_URL=smtp://... gives
    settings.EMAIL_TIMEOUT = 10
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", server.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    yield server
    server.stop()


def test_an_smtp_server_without_starttls_is_named_as_such_not_unreachable(smtp, settings):
    settings.EMAIL_USE_TLS = True  # EMAIL_URL's ?tls=True, against a server that offers no STARTTLS
    with pytest.raises(TransientDeliveryError) as raised:
        EmailBackend().send(recipient="a@example.com", subject="Hi", body="plain")
    assert raised.value.code == "smtp-unsupported"
    assert "SMTP server does not offer what EMAIL_URL asks for" in raised.value.message
    assert "check its tls and ssl options" in raised.value.message


def test_email_backend_sends_text_and_html_over_smtp(smtp):
    message_id = EmailBackend().send(recipient="a@example.com", subject="Hi", body="plain", html_body="<b>html</b>")
    [mail] = smtp.delivered("a@example.com")
    assert mail["Message-ID"] == message_id
    assert mail.get_body(("plain",)).get_content().strip() == "plain"
    assert mail.get_body(("html",)).get_content().strip() == "<b>html</b>"


def bound(monkeypatch, *, conversation: float, data: float) -> None:
    monkeypatch.setattr(bounded_smtp.BoundedEmailBackend, "conversation_seconds", conversation)
    monkeypatch.setattr(bounded_smtp.BoundedEmailBackend, "data_seconds", data)


def send_timed(recipient: str = "a@example.com") -> tuple[str | BaseException, float]:
    started = time.monotonic()
    try:
        outcome = EmailBackend().send(recipient=recipient, subject="Hi", body="plain")
    except TransientDeliveryError as error:
        outcome = error
    return outcome, time.monotonic() - started


def test_a_slow_envelope_is_cut_before_the_message_leaving_it_unsent(smtp, monkeypatch):
    """Each reply within EMAIL_TIMEOUT is not enough: the conversation up to DATA has the bound
    less the message's share, so a send task's time limit never comes while a server takes it."""
    bound(monkeypatch, conversation=4, data=3)
    smtp.handler.pauses.update(MAIL=0.6, RCPT=5)
    error, seconds = send_timed()
    assert seconds < 3  # cut at 1 s (4 - 3), not after the 5 s reply
    assert (error.code, smtp.delivered("a@example.com")) == ("timeout", [])
    assert (
        str(error)
        == "SMTP server too slow: SMTP conversation cut: the conversation before the message took more than 1 s"
    )


def test_the_reply_to_the_messages_end_may_take_longer_than_email_timeout(smtp, settings, monkeypatch):
    """A cut there cannot tell a taken message from one that was not, and would send it again:
    that reply (content scanning) waits for the message's whole share, not EMAIL_TIMEOUT."""
    settings.EMAIL_TIMEOUT = 1
    bound(monkeypatch, conversation=8, data=4)
    smtp.handler.pauses.update(DATA=2)
    message_id, _ = send_timed()
    assert [mail["Message-ID"] for mail in smtp.delivered("a@example.com")] == [message_id]


def test_a_message_past_its_share_of_the_bound_is_cut(smtp, monkeypatch):
    bound(monkeypatch, conversation=4, data=1)
    smtp.handler.pauses.update(DATA=5)
    error, seconds = send_timed()
    assert seconds < 3.5 and error.code == "timeout"
    assert str(error).endswith("cut: the message took more than 1 s")


def test_a_reply_dripping_in_a_byte_at_a_time_is_cut_at_the_bound(settings, monkeypatch):
    """EMAIL_TIMEOUT bounds each receive: a byte every 0.3 s would never meet it."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def drip():
        conversation, _ = listener.accept()
        with conversation:
            for byte in b"220 slow.example ESMTP\r\n":
                if stop.wait(0.3):
                    return
                with contextlib.suppress(OSError):
                    conversation.sendall(bytes([byte]))

    threading.Thread(target=drip, daemon=True).start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", listener.getsockname()[1]
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_TIMEOUT = 10
    bound(monkeypatch, conversation=2, data=1)
    try:
        error, seconds = send_timed()
    finally:
        stop.set()
        listener.close()
    assert seconds < 3  # the greeting alone would take 7 s
    assert error.code == "timeout"


def test_without_email_timeout_the_bound_still_holds(smtp, settings, monkeypatch):
    settings.EMAIL_TIMEOUT = None  # Django's default: no limit on any one wait
    bound(monkeypatch, conversation=3, data=1)
    message_id, _ = send_timed()
    assert [mail["Message-ID"] for mail in smtp.delivered("a@example.com")] == [message_id]
    smtp.handler.pauses.update(RCPT=5)
    error, seconds = send_timed("b@example.com")
    assert seconds < 4 and error.code == "timeout"


def test_a_message_the_server_took_counts_as_sent_when_the_bound_cuts_its_quit(smtp, monkeypatch):
    """Past the server's reply to the message, the bound must not turn the send into a failure:
    it would be sent again."""
    bound(monkeypatch, conversation=2, data=1)
    smtp.handler.pauses.update(QUIT=5)
    message_id, seconds = send_timed()
    assert seconds < 4
    assert [mail["Message-ID"] for mail in smtp.delivered("a@example.com")] == [message_id]


def test_a_connection_failing_before_the_message_is_closed_at_once(smtp, settings, monkeypatch):
    """Not left half-open for the cycle collector: a backend made for one message has no next open()."""
    settings.EMAIL_USE_TLS = True  # the test server offers no STARTTLS
    made = []
    start = bounded_smtp.BoundedSMTP.__init__

    def recorded(connection, *args, **kwargs):
        made.append(connection)
        start(connection, *args, **kwargs)

    monkeypatch.setattr(bounded_smtp.BoundedSMTP, "__init__", recorded)
    error, _ = send_timed()
    assert "STARTTLS" in str(error.__cause__)
    assert len(made) == 1 and made[0].sock is None  # closed


def test_whatever_the_server_answers_to_quit_the_message_it_took_is_sent(smtp):
    smtp.handler.quit_reply = "221 " + "x" * 9000  # longer than smtplib reads: "Line too long"
    message_id, _ = send_timed()
    assert [mail["Message-ID"] for mail in smtp.delivered("a@example.com")] == [message_id]


def test_a_tls_handshake_without_answer_is_a_timeout(settings):
    silent = socket.create_server(("127.0.0.1", 0))  # takes the connection, never answers
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", silent.getsockname()[1]
    settings.EMAIL_USE_TLS, settings.EMAIL_USE_SSL, settings.EMAIL_TIMEOUT = False, True, 0.5
    try:
        error, _ = send_timed()
    finally:
        silent.close()
    assert (error.code, str(error)) == ("timeout", "SMTP server did not answer within 0.5 s")


def test_a_reply_slower_than_email_timeout_is_a_timeout(smtp, settings):
    settings.EMAIL_TIMEOUT = 0.5
    smtp.handler.pauses.update(RCPT=3)
    error, _ = send_timed()
    assert error.code == "timeout"
    assert "did not answer within 0.5 s" in str(error)


@pytest.mark.django_db
def test_an_email_from_a_long_domain_is_recorded_with_its_message_id(smtp, settings, shop, published):
    """The Message-ID grows with the sending domain; the row must hold it, or the send is never
    recorded and goes out again after its lease."""
    settings.DEFAULT_FROM_EMAIL = "orders@notifications.a-rather-long-shop-name.example.com"
    settings.NOTIFICATIONS_EMAIL_RATE_LIMIT = Rate(count=100, period_seconds=1)
    services.limiter_for.cache_clear()
    email = place_order(owner=shop).notifications.get(channel="email")
    assert services.notification_send(notification_id=email.pk).outcome == "sent"
    email.refresh_from_db()
    [mail] = smtp.delivered(email.recipient)
    message_id = mail["Message-ID"].strip()  # folded onto its own line, being long
    assert len(message_id) > 64
    assert (email.status, email.provider_message_id) == ("sent", message_id)
    assert email.attempt_log.get().provider_message_id == message_id


@pytest.mark.parametrize(
    ("reply", "error", "code"),
    [
        ("451 4.3.0 Try later", TransientDeliveryError, "smtp-451"),
        ("550 5.1.1 No such user", PermanentDeliveryError, "smtp-550"),
    ],
)
def test_email_refusals_are_classified(smtp, reply, error, code):
    smtp.script("b@example.com", reply)
    with pytest.raises(error) as raised:
        EmailBackend().send(recipient="b@example.com", subject="Hi", body="plain")
    assert raised.value.code == code
    assert isinstance(raised.value.__cause__, smtplib.SMTPRecipientsRefused)


def test_an_smtp_server_saying_slow_down_is_told_apart_from_a_recipient_to_try_later(smtp):
    smtp.script("busy@example.com", "421 4.7.0 Too many messages, slow down")
    smtp.script("greylisted@example.com", "451 4.7.1 Greylisted, try again later")
    refusals = {}
    for recipient in ("busy@example.com", "greylisted@example.com"):
        with pytest.raises(TransientDeliveryError) as raised:
            EmailBackend().send(recipient=recipient, subject="Hi", body="plain")
        refusals[recipient] = (raised.value.code, raised.value.throttled)
    assert refusals == {"busy@example.com": ("smtp-421", True), "greylisted@example.com": ("smtp-451", False)}


def test_smtp_server_down_is_transient_and_named(smtp):
    smtp.stop()
    with pytest.raises(TransientDeliveryError) as raised:
        EmailBackend().send(recipient="a@example.com", subject="Hi", body="plain")
    assert raised.value.code == "network"
    assert raised.value.message == f"SMTP server 127.0.0.1:{smtp.port} unreachable: ConnectionRefusedError"


def test_ssl_asked_of_a_plain_smtp_server_names_the_options_to_check(smtp, settings):
    settings.EMAIL_USE_SSL = True  # EMAIL_URL's ?ssl=True, against a server that speaks plain SMTP
    with pytest.raises(TransientDeliveryError) as raised:
        EmailBackend().send(recipient="a@example.com", subject="Hi", body="plain")
    assert raised.value.code == "network"
    assert raised.value.message.startswith(f"SMTP server 127.0.0.1:{smtp.port} unreachable: SSL")
    assert raised.value.message.endswith("; check EMAIL_URL's tls and ssl options")
    assert raised.value.setting_to_fix == "EMAIL_URL"


def test_a_server_that_does_not_speak_smtp_is_retried_naming_email_url(settings):
    listener = socket.create_server(("127.0.0.1", 0))

    def answer_as_a_web_server():  # speaks first, as an SMTP server would, but not SMTP
        with contextlib.suppress(OSError), listener.accept()[0] as connection:
            connection.sendall(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")

    threading.Thread(target=answer_as_a_web_server, daemon=True).start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", listener.getsockname()[1]
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    try:
        with pytest.raises(TransientDeliveryError) as raised:
            EmailBackend().send(recipient="a@example.com", subject="Hi", body="plain")
    finally:
        listener.close()
    assert raised.value.code == "smtp-not-smtp"
    assert raised.value.message.startswith(
        f"the server at 127.0.0.1:{settings.EMAIL_PORT} does not answer as an SMTP server (it said '"
    )
    assert raised.value.message.endswith("; check EMAIL_URL")
    assert raised.value.setting_to_fix == "EMAIL_URL"


def test_refused_smtp_credentials_are_retried_naming_email_url():
    refused = classify_smtp_reply(535, b"5.7.8 Authentication credentials invalid", what="SMTP error")
    assert isinstance(refused, TransientDeliveryError)
    assert refused.message.endswith("; check the user and password in EMAIL_URL")
    assert refused.setting_to_fix == "EMAIL_URL"


@pytest.fixture
def raw_twilio(settings):
    """A Twilio-compatible host answering every request with the one HTTP response given."""
    answer = {"bytes": b""}
    listener = serving_http(lambda head: answer["bytes"])
    settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN = SID, TOKEN
    settings.TWILIO_API_BASE_URL = f"http://127.0.0.1:{listener.getsockname()[1]}"
    settings.TWILIO_FROM_NUMBER = "+15005550006"
    settings.TWILIO_MESSAGING_SERVICE_SID = ""
    settings.TWILIO_STATUS_CALLBACK_URL = ""

    def answer_with(status: str, body: bytes, content_type: str = "application/json"):
        answer["bytes"] = (
            f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode() + body

    yield answer_with
    listener.close()


def test_an_accepted_sms_whose_answer_is_not_json_counts_as_sent_without_an_id(raw_twilio):
    raw_twilio("201 Created", b"OK", content_type="text/plain")
    assert TwilioBackend().send(recipient="+14155552671", body="hello") == ""


@pytest.mark.parametrize(
    ("body", "kept_id"),
    [
        (b"null", ""),
        (b"[]", ""),
        (b'"queued"', ""),
        (b'{"sid": "SM123", "date_created": 5}', "SM123"),  # a field the library cannot read
    ],
)
def test_an_accepted_sms_whose_json_answer_the_library_cannot_read_counts_as_sent(raw_twilio, body, kept_id):
    # Twilio took the message (2xx): a dead letter here would be requeued and sent twice.
    raw_twilio("201 Created", body)
    assert TwilioBackend().send(recipient="+14155552671", body="hello") == kept_id


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/html", b"<html><h1>Welcome to nginx!</h1></html>"),
        ("application/json", b"{}"),
        ("application/json", b'{"status": "ok"}'),
    ],
)
def test_a_200_without_a_message_sid_is_not_twilio_and_goes_dead_naming_the_base_url(raw_twilio, content_type, body):
    """Twilio answers a create with 201 and the message: a default site or a proxy page at the
    base URL answered 200, and every SMS was recorded as sent."""
    raw_twilio("200 OK", body, content_type=content_type)
    with pytest.raises(PermanentDeliveryError) as raised:
        TwilioBackend().send(recipient="+14155552671", body="hello")
    assert raised.value.code == "http-200"
    assert f"an answer without a message sid ({content_type})" in raised.value.message
    assert "the server at TWILIO_API_BASE_URL does not answer as Twilio's API" in raised.value.message


def test_a_200_holding_a_message_sid_counts_as_sent(raw_twilio):
    raw_twilio("200 OK", b'{"sid": "SM0123", "status": "queued"}')
    assert TwilioBackend().send(recipient="+14155552671", body="hello") == "SM0123"


def test_an_rfc_9457_problem_answer_is_classified_like_any_twilio_error(raw_twilio):
    problem = (
        b'{"type": "https://www.twilio.com/docs/errors/20503", "title": "Service unavailable",'
        b' "status": 503, "code": 20503}'
    )
    raw_twilio("503 Service Unavailable", problem, content_type="application/problem+json")
    with pytest.raises(TransientDeliveryError) as error:
        TwilioBackend().send(recipient="+14155552671", body="hello")
    assert error.value.code == "twilio-20503"


def test_a_bare_404_says_the_base_url_is_not_twilios_api(raw_twilio):
    raw_twilio("404 Not Found", b"<h1>Not Found</h1>", content_type="text/html")
    with pytest.raises(PermanentDeliveryError) as raised:
        TwilioBackend().send(recipient="+14155552671", body="hello")
    assert raised.value.code == "http-404"
    assert "the server at TWILIO_API_BASE_URL does not answer as Twilio's API" in raised.value.message


@pytest.mark.parametrize("status", ["301 Moved Permanently", "307 Temporary Redirect"])
def test_a_redirect_says_the_base_url_points_elsewhere(raw_twilio, status):
    raw_twilio(status, b"", content_type="text/html")
    with pytest.raises(PermanentDeliveryError) as raised:
        TwilioBackend().send(recipient="+14155552671", body="hello")
    assert raised.value.code == f"http-{status[:3]}"
    assert "TWILIO_API_BASE_URL redirects elsewhere" in raised.value.message


@pytest.mark.parametrize(
    ("sender", "domain"),
    [
        ("orders@shop.example", "shop.example"),
        ("Orderflow Shop <orders@shop.example>", "shop.example"),  # not "shop.example>"
        ("orders@caf\u00e9.example", "xn--caf-dma.example"),  # a Message-ID is ASCII
    ],
)
def test_the_message_id_carries_the_senders_domain_as_a_message_id_can(smtp, settings, sender, domain):
    settings.DEFAULT_FROM_EMAIL = sender
    message_id = EmailBackend().send(recipient="ada@example.com", subject="Hi", body="text")
    assert message_id.startswith("<") and message_id.endswith(f"@{domain}>")
    assert smtp.handler.messages[-1]["Message-ID"] == message_id


@pytest.mark.parametrize(
    ("code", "reason", "said"),
    [
        (451, b"4.3.0 Temporary failure", "recipient deferred for now: 451 4.3.0 Temporary failure"),
        (421, b"4.7.0 Try again later", "recipient deferred for now: 421 4.7.0 Try again later"),
        (550, b"5.1.1 User unknown", "recipient refused: 550 5.1.1 User unknown"),
    ],
)
def test_a_recipient_put_off_for_now_is_not_said_to_be_refused(code, reason, said):
    error = classify_smtp_reply(code, reason, what="recipient refused", at_recipient=True)
    assert error.message == said
