import phonenumbers

from orderflow.errors import ApplicationError


def phone_to_e164(raw: str, *, field: str = "customer_phone") -> str:
    """Normalise a phone number written in any international form to E.164 (+14155552671)."""
    try:
        number = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not phonenumbers.is_valid_number(number):
        message = f"{raw!r} is not a valid phone number; write it with its country code, e.g. +14155552671."
        raise ApplicationError(message, fields={field: [message]})
    if number.extension:
        message = f"{raw!r} has an extension, which cannot receive an SMS; give the number without it."
        raise ApplicationError(message, fields={field: [message]})
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
