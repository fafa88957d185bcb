"""The OpenAPI schema: every operation documents the errors it can answer, in one shape."""

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from rest_framework import serializers
from rest_framework.permissions import AllowAny


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="What went wrong and what to do about it, for a person.")
    code = serializers.CharField(help_text="A stable word for programs: invalid, not_found, ...")
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Problems by field path (`items[1].quantity`), each a list of messages, when the input was at fault.",
    )

    class Meta:
        ref_name = "Error"


class AutoSchema(SpectacularAutoSchema):
    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if schema and isinstance(field, serializers.ListSerializer):  # drf-spectacular leaves out its bounds
            least = field.min_length if field.min_length is not None else (0 if field.allow_empty else 1)
            if least:
                schema["minItems"] = least
            if field.max_length is not None:
                schema["maxItems"] = field.max_length
        # DRF refuses a blank text unless allow_blank; drf-spectacular does not say so.
        blank_refused = isinstance(field, serializers.CharField) and not field.allow_blank and not field.read_only
        if schema and blank_refused and "type" in schema and "minLength" not in schema:
            schema["minLength"] = 1
        return schema

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for code in self._error_codes():
            responses.setdefault(code, self._get_response_for_code(ErrorSerializer, code, direction=direction))
        return responses

    def _error_codes(self) -> list[str]:
        # Bad input or query parameters; no such object or page; a ?format= or Accept the page cannot give.
        codes = ["400", "404", "406"]
        if not any(isinstance(permission, AllowAny) for permission in self.view.get_permissions()):
            codes.append("401")
        if self.method in ("POST", "PUT", "PATCH"):
            codes += ["411", "413", "415"]  # a chunked body; body too large; not JSON
        return codes
