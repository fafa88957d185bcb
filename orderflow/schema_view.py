"""/api/schema/. Not in orderflow.schema or orderflow.api: the DRF settings import those
modules, and importing drf_spectacular.views reads the settings, which would be circular."""

from drf_spectacular.views import SpectacularAPIView
from rest_framework.renderers import JSONRenderer


class SchemaView(SpectacularAPIView):
    """The document in YAML or JSON; its errors (a bad token, a POST) in JSON, as everywhere
    else, not in the document's format."""

    def handle_exception(self, exc):
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return super().handle_exception(exc)
