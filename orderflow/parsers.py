"""Request parsers. Kept apart from orderflow.api: DRF imports these while it loads its views."""

from rest_framework import exceptions, parsers


class JSONParser(parsers.JSONParser):
    """The standard parser, refusing bodies nested too deeply to parse instead of crashing."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - the body is nested too deeply.") from None
