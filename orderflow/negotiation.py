"""DRF's content negotiation, answering an unknown ?format= with a 406 naming the formats a
page has; DRF's own answer, a 404, says the page is not there.

Its own module: DRF's APIView reads this class from settings as it is defined, so the module
naming it must not import rest_framework.views (orderflow.api does).
"""

from rest_framework import exceptions
from rest_framework.negotiation import DefaultContentNegotiation


class ContentNegotiation(DefaultContentNegotiation):
    def filter_renderers(self, renderers, format):
        matching = [renderer for renderer in renderers if renderer.format == format]
        if not matching:
            known = ", ".join(dict.fromkeys(renderer.format for renderer in renderers if renderer.format))
            raise exceptions.NotAcceptable(f"There is no format {format!r} here; use one of: {known}.")
        return matching
