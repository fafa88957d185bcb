import pytest

from orderflow.errors import ApplicationError
from orders.phones import phone_to_e164


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        # Written with its country code, in a range no line is given (the UK's drama numbers):
        # the person is told to check the digits, not to add a code it has.
        (
            "+44 7700 900123",
            "'+44 7700 900123' is not a valid phone number: +44 has no number in use like it; check its digits.",
        ),
        ("+1 555", "'+1 555' is not a valid phone number: it is too short for a number of +1."),
        ("+49 30 1234 5678 9012 34", "it is too long for a number of +49 (DE)."),
        ("+999 12345678", "no country has the code it starts with; write it with its country code, e.g. +14155552671."),
        (
            "07700 900123",
            "'07700 900123' is not a valid phone number: write it with its country code, e.g. +14155552671.",
        ),
        ("call me maybe", "it is not a phone number; write it with its country code"),
    ],
)
def test_a_number_refused_says_what_is_wrong_with_it(raw, said):
    with pytest.raises(ApplicationError) as refused:
        phone_to_e164(raw)
    assert said in refused.value.message
    assert refused.value.fields == {"customer_phone": [refused.value.message]}


@pytest.mark.parametrize(
    "raw", ["+44 7911 123456", "+44 (0)7911 123456", "+447911123456", "0044 7911 123456", " 00447911123456"]
)
def test_a_number_written_any_international_way_is_kept_in_e164(raw):
    assert phone_to_e164(raw) == "+447911123456"
