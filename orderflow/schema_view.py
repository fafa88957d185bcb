"""/api/schema/. A module of its own: the DRF settings import orderflow.schema and
orderflow.api, and drf-spectacular's views read those settings when imported."""

from drf_spectacular.views import SpectacularAPIView
from rest_framework.renderers import JSONRenderer


class SchemaView(SpectacularAPIView):
    """The document in YAML or JSON; its errors (a bad token, a POST) in JSON, as everywhere
    else, not in the document's format."""

    def handle_exception(self, exc):
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return super().handle_exception(exc)
