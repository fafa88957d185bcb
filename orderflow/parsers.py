"""Reading what a request carries: its body (DRF parsers) and numbers in its URL or query.

Kept apart from orderflow.api: DRF imports the parsers while it loads its views.
"""

import sys

from rest_framework import exceptions, parsers


class JSONParser(parsers.JSONParser):
    """The standard parser, refusing bodies nested too deeply to parse instead of crashing, and
    numbers too long for Python in words a client can act on (not "use sys.set_int_max_str_digits()")."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - the body is nested too deeply.") from None
        except exceptions.ParseError as error:
            if "integer string conversion" not in str(error.__context__):
                raise
            raise exceptions.ParseError(
                f"JSON parse error - a number in the body has more than {sys.get_int_max_str_digits()} digits; "
                "no field takes one that long."
            ) from None


# The largest bigint, an id's column: SQLite cannot even take a larger number as a parameter.
LARGEST = 2**63 - 1
# Its digits; int() refuses a string of more than 4,300.
MOST_DIGITS = len(str(LARGEST))


def whole_number(text: str) -> int | None:
    """`text` as a whole number if it is written in ASCII digits and fits a bigint, else None.

    str.isdigit() also holds for "²" and "①", which int() refuses, and int() reads other
    scripts' digits (Arabic-Indic one is 1): neither is what a person means in a URL.
    """
    if text.isascii() and text.isdigit() and len(text) <= MOST_DIGITS and int(text) <= LARGEST:
        return int(text)
    return None
