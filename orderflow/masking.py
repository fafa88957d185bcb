"""Show enough of a phone number or email address to recognise it, not enough to use it."""

import logging
import re
from urllib.parse import unquote, unquote_plus


def mask_recipient(value: str) -> str:
    if not value:
        return ""
    if "@" in value:
        local, _, domain = value.rpartition("@")
        return f"{local[:1]}***@{domain}"
    digits = value.lstrip("+")
    if len(digits) <= 4:
        return "***"
    return f"{'+' if value.startswith('+') else ''}{digits[:2]}***{digits[-2:]}"


EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
PHONE = re.compile(r"\+\d[\d\s().-]{6,}\d")
# The same in a URL's query string, as a request line logs it: ?q=ada%40example.com, ?q=%2B4420...
ENCODED_EMAIL = re.compile(r"[\w.%+-]+%40[\w-]+(?:\.[\w-]+)+")
ENCODED_PHONE = re.compile(r"%2[Bb]\d(?:[\d().-]|%20){6,}\d")
# A URL's query string in a request line, and one of its values that is a phone number as a
# person types it into a search: any separators (a form sends a space as "+"), a "+" or "00"
# before the country code or neither, and at least as many digits as the shortest in use.
QUERY_STRING = re.compile(r"\?[^\s\"'#]+")
TYPED_PHONE = re.compile(r"\s*\+?[\d\s().-]+")
FEWEST_PHONE_DIGITS = 8
DATE = re.compile(r"\s*\d{4}-\d{2}-\d{2}\s*")  # a list's date filter


def mask_text(text: str, keep: tuple[str, ...] = ()) -> str:
    """Mask every email address and international phone number in free text (log messages),
    except one lying wholly inside an occurrence of a `keep` string (an id that looks like one)."""
    # Every log line passes here (10 to 20 µs a line with both patterns); most hold neither sign.
    if "?" in text:  # first: "+" is also how a query string writes a space
        text = _substitute(QUERY_STRING, text, keep, _mask_query_string)
    if "@" in text:
        text = _substitute(EMAIL, text, keep, mask_recipient)
    if "+" in text:
        text = _substitute(PHONE, text, keep, lambda found: mask_recipient(re.sub(r"[^\d+]", "", found)))
    if "%" in text:
        text = _substitute(ENCODED_EMAIL, text, keep, lambda found: mask_recipient(unquote(found)))
        text = _substitute(
            ENCODED_PHONE, text, keep, lambda found: mask_recipient(re.sub(r"[^\d+]", "", unquote(found)))
        )
    return text


def _mask_query_string(query: str) -> str:
    """A query string with each value that is a phone number, however typed, masked."""
    pairs = []
    for pair in query[1:].split("&"):
        name, equals, value = pair.partition("=")
        typed = unquote_plus(value)
        digits = re.sub(r"\D", "", typed)
        if len(digits) >= FEWEST_PHONE_DIGITS and TYPED_PHONE.fullmatch(typed) and not DATE.fullmatch(typed):
            # A "+" sent unencoded is a space to a server, but the number's "+" to whoever typed it.
            plus = value.startswith(("+", "%2B", "%2b"))
            value = mask_recipient(("+" if plus else "") + digits)
        pairs.append(f"{name}{equals}{value}")
    return "?" + "&".join(pairs)


def _substitute(pattern: re.Pattern, text: str, keep: tuple[str, ...], mask) -> str:
    kept = [(found.start(), found.end()) for value in keep if value for found in re.finditer(re.escape(value), text)]

    def replace(match: re.Match) -> str:
        if any(start <= match.start() and match.end() <= end for start, end in kept):
            return match.group()
        return mask(match.group())

    return pattern.sub(replace, text)


# What every LogRecord holds; anything else on a record came in through `extra=`.
RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


# Fields holding ids that we or a provider made, never personal data, shown as they are where
# the message repeats them too: an email's Message-ID looks like an address, and masked it
# could not be found in the mail server's logs.
UNMASKED_FIELDS = frozenset({"provider_message_id"})


class MaskingFilter(logging.Filter):
    """Attached to every log handler: no full phone number or email address leaves the process,
    in the message or in the fields given as `extra` (the JSON format writes those as they are)."""

    def filter(self, record: logging.LogRecord) -> bool:
        kept = tuple(value for name in UNMASKED_FIELDS if isinstance(value := getattr(record, name, None), str))
        message = record.getMessage()
        masked = mask_text(message, kept)
        if masked != message:
            record.msg, record.args = masked, ()
        for name, value in list(vars(record).items()):
            if isinstance(value, str) and name not in RECORD_ATTRIBUTES and name not in UNMASKED_FIELDS:
                setattr(record, name, mask_text(value))
        return True


class ClientErrorWithoutTraceback(logging.Filter):
    """On django.request: a 4xx (a 403 for a missing permission, a 404) is the client's doing,
    logged as one line; Django passes the exception along and it printed as a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "status_code", 500) < 500:
            record.exc_info = record.exc_text = None
        return True
