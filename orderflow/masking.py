"""Show enough of a phone number or email address to recognise it, not enough to use it."""

import logging
import re


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


def mask_text(text: str) -> str:
    """Mask every email address and international phone number in free text (log messages)."""
    # Every log line passes here (10 to 20 µs a line with both patterns); most hold neither sign.
    if "@" in text:
        text = EMAIL.sub(lambda match: mask_recipient(match.group()), text)
    if "+" in text:
        text = PHONE.sub(lambda match: mask_recipient(re.sub(r"[^\d+]", "", match.group())), text)
    return text


# What every LogRecord holds; anything else on a record came in through `extra=`.
RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


# Fields holding ids that we or a provider made, never personal data, shown as they are where
# the message repeats them too: an email's Message-ID looks like an address, and masked it
# could not be found in the mail server's logs.
UNMASKED_FIELDS = frozenset({"provider_message_id"})


def _mask_around(text: str, kept: list[str]) -> str:
    """mask_text(text), leaving every occurrence of the `kept` strings as it is."""
    if not kept:
        return mask_text(text)
    head, *others = kept
    return head.join(_mask_around(part, others) for part in text.split(head))


class MaskingFilter(logging.Filter):
    """Attached to every log handler: no full phone number or email address leaves the process,
    in the message or in the fields given as `extra` (the JSON format writes those as they are)."""

    def filter(self, record: logging.LogRecord) -> bool:
        kept = [value for name in UNMASKED_FIELDS if isinstance(value := getattr(record, name, None), str) and value]
        message = record.getMessage()
        masked = _mask_around(message, kept)
        if masked != message:
            record.msg, record.args = masked, ()
        for name, value in list(vars(record).items()):
            if isinstance(value, str) and name not in RECORD_ATTRIBUTES and name not in UNMASKED_FIELDS:
                setattr(record, name, mask_text(value))
        return True
