"""DRF's content negotiation, answering a format or an Accept header it cannot serve with a 406
that names what the page can be given as; DRF's own answers are a 404 for an unknown ?format=
(which says the page is not there) and a sentence naming neither.

Its own module: DRF's APIView reads this class from settings as it is defined, so the module
naming it must not import rest_framework.views (orderflow.api does).
"""

from rest_framework import exceptions
from rest_framework.negotiation import DefaultContentNegotiation

# An Accept header is echoed back at most this long.
SHOWN_ACCEPT_LENGTH = 100


class UnknownFormat(exceptions.NotAcceptable):
    pass


class ContentNegotiation(DefaultContentNegotiation):
    def select_renderer(self, request, renderers, format_suffix=None):
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except UnknownFormat:
            raise
        except exceptions.NotAcceptable:
            accept = request.headers.get("Accept", "")[:SHOWN_ACCEPT_LENGTH]
            media_types = ", ".join(dict.fromkeys(renderer.media_type for renderer in renderers))
            raise exceptions.NotAcceptable(
                f"Nothing here can be sent as Accept: {accept!r} asks; accept one of: {media_types}."
            ) from None

    def filter_renderers(self, renderers, format):
        matching = [renderer for renderer in renderers if renderer.format == format]
        if not matching:
            known = ", ".join(dict.fromkeys(renderer.format for renderer in renderers if renderer.format))
            raise UnknownFormat(f"There is no format {format!r} here; use one of: {known}.")
        return matching
