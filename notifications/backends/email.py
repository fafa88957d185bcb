import re
import smtplib
import ssl
from email.utils import parseaddr

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.message import make_msgid
from django.core.mail.utils import DNS_NAME

from notifications.backends.smtp import BoundedEmailBackend, SMTPConversationTimeout
from notifications.errors import PermanentDeliveryError, TransientDeliveryError

DJANGO_SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"


def message_id_domain(from_email: str) -> str:
    """The sender's domain as a Message-ID holds it: from `Shop <orders@shop.example>` too (not
    `shop.example>`), and in ASCII (punycode), since a header-encoded Message-ID is no Message-ID."""
    domain = parseaddr(from_email)[1].rpartition("@")[2]
    try:
        return domain.encode("idna").decode("ascii") if domain else "localhost"
    except UnicodeError:
        return "localhost"


class EmailBackend:
    """Sends through Django's configured email backend (EMAIL_URL), plain text with an HTML part.

    Over SMTP each conversation is bounded (notifications.backends.smtp), so that the send
    task's time limits come after it.
    """

    def __init__(self):
        # The name this host gives in EHLO, looked up once (a DNS query) in a worker's main
        # process before its pool forks, not inside the first send's time.
        DNS_NAME.get_fqdn()

    def connection(self):
        if settings.EMAIL_BACKEND == DJANGO_SMTP_BACKEND:
            return BoundedEmailBackend(fail_silently=False)
        return get_connection(fail_silently=False)

    def send(self, *, recipient: str, subject: str, body: str, html_body: str = "", reference: str = "", **_) -> str:
        """`reference`, the same for every send of one notification, makes its Message-ID."""
        domain = message_id_domain(settings.DEFAULT_FROM_EMAIL)
        message_id = f"<{reference}@{domain}>" if reference else make_msgid(domain=domain)
        message = EmailMultiAlternatives(
            subject=subject,
            body=body,
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[recipient],
            headers={"Message-ID": message_id},
            connection=self.connection(),
        )
        if html_body:
            message.attach_alternative(html_body, "text/html")
        try:
            message.send(fail_silently=False)
        except SMTPConversationTimeout as error:
            raise TransientDeliveryError(f"SMTP server too slow: {error}", code="timeout") from error
        except smtplib.SMTPServerDisconnected as error:
            if not isinstance(error.__context__, TimeoutError):
                raise unreachable(str(error)) from error
            raise no_answer() from error
        except TimeoutError as error:  # connecting, or a TLS handshake
            raise no_answer() from error
        except smtplib.SMTPNotSupportedError as error:  # reachable, but not as EMAIL_URL asks (STARTTLS)
            raise TransientDeliveryError(
                f"SMTP server does not offer what EMAIL_URL asks for: {error}; check its tls and ssl options",
                code="smtp-unsupported",
            ) from error
        except smtplib.SMTPRecipientsRefused as error:
            code, reason = next(iter(error.recipients.values()))
            raise classify_smtp_reply(code, reason, what="recipient refused", at_recipient=True) from error
        except smtplib.SMTPResponseException as error:
            raise classify_smtp_reply(error.smtp_code, error.smtp_error, what="SMTP error") from error
        except (smtplib.SMTPException, OSError) as error:
            raise unreachable(error.__class__.__name__, tls=isinstance(error, ssl.SSLError)) from error
        return message_id


def server_named() -> str:
    """The server as smtplib reaches it: with no port given, 465 for ssl, else 25."""
    port = settings.EMAIL_PORT or (smtplib.SMTP_SSL_PORT if settings.EMAIL_USE_SSL else smtplib.SMTP_PORT)
    return f"{settings.EMAIL_HOST}:{port}"


def unreachable(why: str, *, tls: bool = False) -> TransientDeliveryError:
    """`tls`: the TLS handshake failed, most often EMAIL_URL asking for ssl of a plain server."""
    message = f"SMTP server {server_named()} unreachable: {why}"
    if tls:
        return TransientDeliveryError(
            f"{message}; check EMAIL_URL's tls and ssl options", code="network", setting_to_fix="EMAIL_URL"
        )
    return TransientDeliveryError(message, code="network")


def no_answer() -> TransientDeliveryError:
    return TransientDeliveryError(f"SMTP server did not answer within {settings.EMAIL_TIMEOUT} s", code="timeout")


# 530 and 535: authentication required or refused, a setting to fix, not a bad recipient.
TRANSIENT_SMTP_5XX = {530, 535}
SMTP_SERVER_BUSY = 421
# A refusal of the address itself suppresses the recipient (Suppression): a 550, 551 or 553
# reply to RCPT TO whose enhanced status (RFC 3463, RFC 7505) says the destination address is
# bad: 5.1.1 no such mailbox, 5.1.2 no such system, 5.1.3 bad syntax, 5.1.6 moved, 5.1.10 a
# null MX. Other 5.1.x speak of the sender (5.1.7, 5.1.8; Postfix also refuses a sender with
# 5.1.0 at RCPT TO), 5.7.x of relaying or our reputation: about us, not the address. Those, a
# reply naming the sender, and a reply without an enhanced status suppress nobody.
RECIPIENT_REFUSING_SMTP_CODES = {550, 551, 553}
BAD_ADDRESS_STATUS = re.compile(r"5\.1\.(1|2|3|6|10)(?!\d)")


def classify_smtp_reply(code: int, reason: bytes | str, *, what: str, at_recipient: bool = False):
    text = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
    if not 200 <= code < 600:  # smtplib's -1: the reply was not SMTP at all
        return TransientDeliveryError(
            f"the server at {server_named()} does not answer as an SMTP server (it said {text[:80]!r}); "
            "check EMAIL_URL",
            code="smtp-not-smtp",
            setting_to_fix="EMAIL_URL",
        )
    message = f"{what}: {code} {text}"
    if code in TRANSIENT_SMTP_5XX:
        return TransientDeliveryError(
            f"{message}; check the user and password in EMAIL_URL", code=f"smtp-{code}", setting_to_fix="EMAIL_URL"
        )
    if 400 <= code < 500:
        if at_recipient:  # not a refusal: greylisting, a full mailbox, a busy server
            message = f"recipient deferred for now: {code} {text}"
        # 421 is about the server, not the recipient: busy, or "too many, slow down".
        return TransientDeliveryError(message, code=f"smtp-{code}", throttled=code == SMTP_SERVER_BUSY)
    refuses_recipient = (
        at_recipient
        and code in RECIPIENT_REFUSING_SMTP_CODES
        and bool(BAD_ADDRESS_STATUS.match(text.lstrip()))
        and "sender" not in text.lower()
    )
    return PermanentDeliveryError(message, code=f"smtp-{code}", refuses_recipient=refuses_recipient)
