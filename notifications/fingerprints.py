"""Fingerprints group dead letters by cause: the same task failing with the same error and the
same message once numbers, addresses and ids are taken out ("412 x Twilio 21211 invalid number")."""

import hashlib
import re

# Order matters: addresses and phone numbers before bare digit runs.
NORMALISERS = [
    (re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+"), "<email>"),
    (re.compile(r"\+?\d[\d\s().-]{6,}\d"), "<number>"),
    (re.compile(r"\b[0-9a-f]{16,}\b", re.IGNORECASE), "<id>"),
    (re.compile(r"\b(SM|MM|AC|MG)[0-9a-f]{32}\b", re.IGNORECASE), "<sid>"),
    (re.compile(r"\d+"), "<n>"),
]


def normalise_message(message: str) -> str:
    text = message.strip().lower()
    for pattern, placeholder in NORMALISERS:
        text = pattern.sub(placeholder, text)
    return " ".join(text.split())[:500]


def fingerprint(*, task_name: str, exception_type: str, error_code: str, message: str) -> str:
    cause = error_code or exception_type
    key = "\n".join([task_name, cause, normalise_message(message)])
    return hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()
