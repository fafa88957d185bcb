from typing import NoReturn

import phonenumbers
from phonenumbers import NumberParseException, ValidationResult

from orderflow.errors import ApplicationError

WRITE_IT_WHOLE = "write it with its country code, e.g. +14155552671"
# Why a number that has a country code is not one, by phonenumbers' reading of its length.
LENGTH_REASONS = {
    ValidationResult.TOO_SHORT: "it is too short for a number of {country}",
    ValidationResult.TOO_LONG: "it is too long for a number of {country}",
    ValidationResult.INVALID_LENGTH: "no number of {country} has its length",
    ValidationResult.IS_POSSIBLE: "{country} has no number in use like it; check its digits",
}


# Dialled before a country code from most countries: 0044 ... is +44 ...
INTERNATIONAL_PREFIX = "00"


def phone_to_e164(raw: str, *, field: str = "customer_phone") -> str:
    """Normalise a phone number written in any international form to E.164 (+14155552671)."""
    text = raw.strip()
    if text.startswith(INTERNATIONAL_PREFIX):
        text = "+" + text.removeprefix(INTERNATIONAL_PREFIX)
    try:
        number = phonenumbers.parse(text, None)
    except NumberParseException as error:
        _refuse(raw, field, _why_unreadable(text, error))
    if not phonenumbers.is_valid_number(number):
        _refuse(raw, field, _why_not_valid(number))
    if number.extension:
        message = f"{raw!r} has an extension, which cannot receive an SMS; give the number without it."
        raise ApplicationError(message, fields={field: [message]})
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _why_unreadable(raw: str, error: NumberParseException) -> str:
    if error.error_type != NumberParseException.INVALID_COUNTRY_CODE:
        return f"it is not a phone number; {WRITE_IT_WHOLE}"
    if raw.strip().startswith("+"):
        return f"no country has the code it starts with; {WRITE_IT_WHOLE}"
    return WRITE_IT_WHOLE


def _why_not_valid(number: phonenumbers.PhoneNumber) -> str:
    regions = phonenumbers.region_codes_for_country_code(number.country_code)
    # One country's code is shown with it (+44 (GB)); a shared (+1) or non-geographic (+800) one bare.
    country = f"+{number.country_code}" + (f" ({regions[0]})" if len(regions) == 1 and regions[0] != "001" else "")
    reason = LENGTH_REASONS.get(
        phonenumbers.is_possible_number_with_reason(number), LENGTH_REASONS[ValidationResult.IS_POSSIBLE]
    )
    return reason.format(country=country)


def _refuse(raw: str, field: str, reason: str) -> NoReturn:
    message = f"{raw!r} is not a valid phone number: {reason}."
    raise ApplicationError(message, fields={field: [message]})
