"""Reading what a request carries: its body (DRF parsers) and numbers in its URL or query.

Kept apart from orderflow.api: DRF imports the parsers while it loads its views.
"""

import codecs
import sys

from rest_framework import exceptions, parsers
from rest_framework.utils import json


def refuse_duplicate_keys(pairs: list) -> dict:
    """An object as json.load builds it, unless a key comes twice: JSON leaves that open and
    Python keeps the last, so `"items": [...], "items": [...]` would drop the first list unsaid."""
    found = {}
    for key, value in pairs:
        if key in found:
            raise ValueError(f"the key {json.dumps(key)} comes twice in one object; send each key once.")
        found[key] = value
    return found


class JSONParser(parsers.JSONParser):
    """The standard parser, refusing a key given twice in an object, bodies nested too deeply
    to parse instead of crashing, numbers too long for Python in words a client can act on (not
    "use sys.set_int_max_str_digits()"), and a compressed body in words (not a UTF-8 error)."""

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        request = parser_context.get("request")
        encoding = request.META.get("HTTP_CONTENT_ENCODING", "").strip() if request is not None else ""
        if encoding and encoding.lower() != "identity":
            raise exceptions.UnsupportedMediaType(
                media_type, detail=f"Content-Encoding {encoding} is not taken; send the body uncompressed."
            )
        try:
            decoded = codecs.getreader(parsers.get_encoding(parser_context))(stream)
            constant = json.strict_constant if self.strict else None
            return json.load(decoded, parse_constant=constant, object_pairs_hook=refuse_duplicate_keys)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - the body is nested too deeply.") from None
        except ValueError as error:
            if "integer string conversion" in str(error):
                raise exceptions.ParseError(
                    f"JSON parse error - a number in the body has more than {sys.get_int_max_str_digits()} digits; "
                    "no field takes one that long."
                ) from None
            raise exceptions.ParseError(f"JSON parse error - {error}") from None


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
