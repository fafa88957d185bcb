"""The order API: thin views over orders.services and orders.selectors."""

import json
import re
import unicodedata
from collections.abc import Mapping

import django_filters
from django import forms
from django.db import models
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from orderflow.errors import ApplicationError
from orderflow.schema import ErrorSerializer
from orders import selectors, services
from orders.models import ChangeSource, Order, OrderItem, OrderStatus, OrderStatusChange

MAX_ITEMS_PER_ORDER = 500
IDEMPOTENCY_HEADER = "Idempotency-Key"
CHANGE_ORDER_PERMISSION = "orders.change_order"
# C0 and C1 controls, the line and paragraph separators, and the marks that override or
# isolate the direction of the text after them (they make a name read differently from what
# it holds, in the admin and in an SMS).
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# Spaces and marks without a glyph, and the letters drawn as nothing (Hangul fillers, the blank
# braille pattern): a name of nothing else shows as blank.
INVISIBLE_CATEGORIES = {"Zs", "Zl", "Zp", "Cf"}
BLANK_LETTERS = set("\u115f\u1160\u2800\u3164\uffa0")


def _invisible(character: str) -> bool:
    return character in BLANK_LETTERS or unicodedata.category(character) in INVISIBLE_CATEGORIES


def no_control_characters(value: str) -> None:
    """Names end up in SMS, email and logs: line breaks, escape codes or a text-direction
    override there are never meant, nor a name no one can see."""
    if CONTROL_CHARACTERS.search(value):
        raise serializers.ValidationError(
            "Must not contain control characters (line breaks, tabs, escapes) or text-direction overrides."
        )
    if value and all(_invisible(character) for character in value):
        raise serializers.ValidationError("Must contain a visible character.")


# A number written as text: ASCII digits only. Python reads "1_0" as 10 and Arabic-Indic or
# full-width digits as theirs, so DRF took them as other numbers than a person meant.
WHOLE_NUMBER_TEXT = re.compile(r"^\s*[+-]?[0-9]+\s*$")
DECIMAL_TEXT = re.compile(r"^\s*[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)\s*$")


class TextField(serializers.CharField):
    """Text given as a JSON string only. DRF's CharField takes a number as its digits: a phone
    sent as 447700900123 lost its "+" (and a leading 0 is gone before JSON is even parsed), and
    a name or sku of 12 hides a client's mix-up of fields."""

    default_error_messages = {"invalid": "Not text: send it as a JSON string, in double quotes."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


# An address may have letters beyond ASCII (ada@exämple.com), which `format: email` does not
# allow: a client validating answers against the schema refused orders the API had taken.
@extend_schema_field({"type": "string", "format": "idn-email"})
class AddressField(serializers.EmailField):
    pass


class PlainIntegerField(serializers.IntegerField):
    def to_internal_value(self, data):
        if isinstance(data, str) and not WHOLE_NUMBER_TEXT.match(data):
            self.fail("invalid")
        return super().to_internal_value(data)


class PlainDecimalField(serializers.DecimalField):
    def to_internal_value(self, data):
        if isinstance(data, str) and not DECIMAL_TEXT.match(data):
            self.fail("invalid")
        return super().to_internal_value(data)


# Described as what it takes: drf-spectacular's pattern for a decimal also allows a minus sign.
@extend_schema_field(
    {"type": "string", "format": "decimal", "pattern": r"^(?:\d{1,8}(?:\.\d{0,2})?|\.\d{1,2})$", "example": "4.50"}
)
class PriceField(PlainDecimalField):
    default_error_messages = {
        "invalid": 'Not a price: write it in plain digits with a point, e.g. "4.50".',
        "max_decimal_places": 'Has more than {max_decimal_places} decimal places; round it to cents, e.g. "4.50".',
        "max_whole_digits": "Too large: at most {max_whole_digits} digits before the decimal point.",
        # With at most 2 decimal places checked first, more than 10 digits are too many whole ones.
        "max_digits": "Too large: at most 8 digits before the decimal point.",
    }

    def __init__(self, **kwargs):
        super().__init__(max_digits=10, decimal_places=2, min_value=0, **kwargs)

    def validate_precision(self, value):
        # Decimal places first: a float sum such as 0.1 + 0.2 (0.30000000000000004) has too many
        # of them, where DRF would first say it has more than 10 digits in all.
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and -exponent > self.decimal_places:
            self.fail("max_decimal_places", max_decimal_places=self.decimal_places)
        return super().validate_precision(value)


class RefusesUnknownFields:
    """A key the body may not hold is refused by its name. DRF drops it: a misspelt
    "customer_mobile" or "Currency" was lost under a 201, leaving an order without its SMS or
    in the shop's currency, and a "total" or "status" sent along was silently not taken."""

    taken_as = "this"

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            writable = [name for name, field in self.fields.items() if not field.read_only]
            if unknown := [name for name in data if name not in writable]:
                said = f"Not a field of {self.taken_as}; it takes {', '.join(writable)}."
                raise serializers.ValidationError({name: [said] for name in unknown})
        return super().to_internal_value(data)


class OrderItemSerializer(RefusesUnknownFields, serializers.ModelSerializer):
    taken_as = "an item"

    serializer_field_mapping = {**serializers.ModelSerializer.serializer_field_mapping, models.CharField: TextField}
    quantity = PlainIntegerField(min_value=1, max_value=1_000_000)
    unit_price = PriceField()

    class Meta:
        model = OrderItem
        fields = ["sku", "name", "quantity", "unit_price"]
        extra_kwargs = {
            "sku": {"min_length": 1, "validators": [no_control_characters]},
            "name": {"min_length": 1, "validators": [no_control_characters]},
        }


class OrderCreateSerializer(RefusesUnknownFields, serializers.Serializer):
    taken_as = "an order"
    customer_name = TextField(min_length=1, max_length=200, validators=[no_control_characters])
    customer_email = AddressField(required=False, allow_blank=True, default="", max_length=254)
    customer_phone = TextField(
        required=False,
        allow_blank=True,
        default="",
        max_length=40,
        help_text="Any international form; stored as E.164.",
    )
    items = OrderItemSerializer(many=True, allow_empty=False, min_length=1, max_length=MAX_ITEMS_PER_ORDER)
    # Checked by orders.services, as every way into an order is.
    currency = TextField(
        required=False,
        max_length=20,
        help_text="ISO 4217 code of the prices (EUR, GBP, JPY...), in any case; by default the shop's "
        "(ORDERS_CURRENCY). A price may have no more decimals than its currency has.",
    )


class StatusChangeSerializer(serializers.ModelSerializer):
    changed_by = serializers.CharField(source="changed_by.get_username", default=None, read_only=True)

    class Meta:
        model = OrderStatusChange
        fields = ["from_status", "to_status", "changed_by", "source", "created_at"]


class OrderSerializer(serializers.ModelSerializer):
    items = OrderItemSerializer(many=True, read_only=True)
    # Empty for an order without one: not an email address then.
    customer_email = AddressField(read_only=True, allow_blank=True)
    allowed_next_statuses = serializers.ListField(child=serializers.ChoiceField(OrderStatus.choices), read_only=True)

    class Meta:
        model = Order
        fields = [
            "id",
            "status",
            "allowed_next_statuses",
            "customer_name",
            "customer_email",
            "customer_phone",
            "total",
            "currency",
            "items",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class OrderDetailSerializer(OrderSerializer):
    status_history = StatusChangeSerializer(source="status_changes", many=True, read_only=True)

    class Meta(OrderSerializer.Meta):
        fields = [*OrderSerializer.Meta.fields, "status_history"]
        read_only_fields = fields


SHOWN_UNKNOWN_STATUSES, SHOWN_STATUS_LENGTH = 5, 40


def shown(value) -> str:
    """A value from a request quoted for an error message as JSON writes it (a string in double
    quotes, a number, true, a list), cut short: the answer should not echo a hostile request back
    at length."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= SHOWN_STATUS_LENGTH else f"{text[:SHOWN_STATUS_LENGTH]}…"


class StatusChoiceField(serializers.ChoiceField):
    def fail(self, key, **kwargs):
        if "input" in kwargs:
            kwargs["input"] = shown(kwargs["input"])
        super().fail(key, **kwargs)


class TransitionSerializer(RefusesUnknownFields, serializers.Serializer):
    taken_as = "a status change"
    status = StatusChoiceField(
        OrderStatus.choices,
        error_messages={
            "invalid_choice": f"{{input}} is not a status; use {', '.join(OrderStatus.values[:-1])} "
            f"or {OrderStatus.values[-1]}."
        },
    )


class StatusesField(forms.MultipleChoiceField):
    """?status=pending&status=confirmed: orders in either. An empty value among them stands for nothing."""

    def to_python(self, value):
        return [item for item in super().to_python(value) if item]

    def validate(self, value):
        # All the unknown ones at once, and what is known: one at a time, a typo at a time.
        unknown = list(dict.fromkeys(item for item in value if not self.valid_value(item)))
        if unknown:
            names = [str(choice) for choice, _ in self.choices]
            what = "is not a status" if len(unknown) == 1 else "are not statuses"
            # A few, each cut short.
            quoted = ", ".join(shown(item) for item in unknown[:SHOWN_UNKNOWN_STATUSES])
            more = (
                f" (and {len(unknown) - SHOWN_UNKNOWN_STATUSES} more)" if len(unknown) > SHOWN_UNKNOWN_STATUSES else ""
            )
            # As a parameter: the message is %-formatted (django-filter), and a value may hold a %.
            raise forms.ValidationError(
                "%(quoted)s%(more)s %(what)s; use %(names)s or %(last)s.",
                code="invalid_choice",
                params={
                    "quoted": quoted,
                    "more": more,
                    "what": what,
                    "names": ", ".join(names[:-1]),
                    "last": names[-1],
                },
            )
        super().validate(value)


class StatusesFilter(django_filters.MultipleChoiceFilter):
    field_class = StatusesField


class OrderFilterForm(forms.Form):
    def clean_status(self):
        # An empty ?status= would silently filter nothing; say so instead.
        if "status" in self.data and not self.cleaned_data["status"]:
            raise forms.ValidationError("Give a status to filter by, or leave the status parameter out.")
        return self.cleaned_data["status"]


class OrderFilter(django_filters.FilterSet):
    # Repeated, the statuses add up: a filter that kept only one of them would hide orders silently.
    status = StatusesFilter(choices=OrderStatus.choices, distinct=False)

    class Meta:
        model = Order
        fields = ["status"]
        form = OrderFilterForm


TRANSITION_REFUSED = inline_serializer(
    "TransitionRefused",
    {
        "detail": serializers.CharField(),
        "code": serializers.CharField(),
        "current_status": serializers.ChoiceField(OrderStatus.choices),
        "allowed": serializers.ListField(child=serializers.ChoiceField(OrderStatus.choices)),
    },
)


SERIALIZERS = {
    "retrieve": OrderDetailSerializer,
    "create": OrderCreateSerializer,
    "transition": TransitionSerializer,
}


# The order's id in the path, an integer as in /api/orders/{order_id}/notifications/.
ORDER_ID = OpenApiParameter("id", OpenApiTypes.INT, OpenApiParameter.PATH, description="The order's id.")


@extend_schema_view(retrieve=extend_schema(parameters=[ORDER_ID]))
class OrderViewSet(mixins.CreateModelMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = OrderSerializer
    filterset_class = OrderFilter
    lookup_value_regex = "[0-9]+"  # ASCII digits: a regex's \d also matches other scripts' digits

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular describing the API
            return Order.objects.none()
        orders = selectors.order_list(user=self.request.user)
        if self.action == "retrieve":
            orders = orders.prefetch_related("status_changes__changed_by")
        return orders

    def filter_queryset(self, queryset):
        # The list's filters choose among orders; on one order (detail, transition) a ?status=
        # would turn the client's own order into a 404.
        return super().filter_queryset(queryset) if self.action == "list" else queryset

    def get_serializer_class(self):
        action = self.action
        if action == "metadata":
            # OPTIONS describes the body each method takes (DRF asks with the request's method
            # set to it): the create's or the transition's, not the order shown in answer.
            action = self.action_map.get(self.request.method.lower(), action)
        return SERIALIZERS.get(action, OrderSerializer)

    @extend_schema(
        request=OrderCreateSerializer,
        parameters=[
            OpenApiParameter(
                IDEMPOTENCY_HEADER,
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="Repeat a create safely: the same key and body return the first order.",
            )
        ],
        responses={
            201: OrderDetailSerializer,
            409: OpenApiResponse(ErrorSerializer, description="A request with this Idempotency-Key is in progress"),
            422: OpenApiResponse(ErrorSerializer, description="Idempotency-Key reused with another body"),
        },
    )
    def create(self, request, *args, **kwargs):
        payload = OrderCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        result = services.order_create(
            owner=request.user,
            customer_name=data["customer_name"],
            customer_email=data["customer_email"],
            customer_phone=data["customer_phone"],
            items=[services.OrderLine(**item) for item in data["items"]],
            source=ChangeSource.API,
            idempotency_key=_idempotency_key(request),
            currency=data.get("currency"),
        )
        order = self.get_queryset().prefetch_related("status_changes__changed_by").get(pk=result.order.pk)
        headers = {"Location": f"/api/orders/{order.pk}/"}
        if not result.created:
            headers["Idempotent-Replayed"] = "true"
        return Response(OrderDetailSerializer(order).data, status=status.HTTP_201_CREATED, headers=headers)

    @extend_schema(
        request=TransitionSerializer,
        parameters=[ORDER_ID],
        responses={
            200: OrderDetailSerializer,
            403: OpenApiResponse(ErrorSerializer, description="Another shop's order, without orders.change_order"),
            409: TRANSITION_REFUSED,
        },
    )
    @action(detail=True, methods=["post"])
    def transition(self, request, pk=None):
        """Move the order to the next status of its workflow."""
        order = self.get_object()
        if order.owner_id != request.user.pk and not request.user.has_perm(CHANGE_ORDER_PERMISSION):
            # Staff read every order; moving another shop's order on sends its customer an SMS
            # and an email, and takes what the admin asks for the same: the permission.
            raise exceptions.PermissionDenied(
                "Only the shop that placed this order can move it along, or staff allowed to change "
                f"orders ({CHANGE_ORDER_PERMISSION})."
            )
        payload = TransitionSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        services.order_transition(
            order_id=order.pk, to_status=payload.validated_data["status"], by=request.user, source=ChangeSource.API
        )
        order = self.get_queryset().prefetch_related("status_changes__changed_by").get(pk=order.pk)
        return Response(OrderDetailSerializer(order).data)


def _idempotency_key(request) -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    key = key.strip()
    # HTTP carries header values as Latin-1 bytes: a key beyond ASCII would arrive garbled.
    if not key or len(key) > 255 or not (key.isascii() and key.isprintable()):
        message = f"{IDEMPOTENCY_HEADER} must be 1 to 255 printable ASCII characters, e.g. a UUID."
        raise ApplicationError(message, fields={IDEMPOTENCY_HEADER: [message]})
    return key
