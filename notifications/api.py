"""`/api/orders/{id}/notifications/`: what the customer was told about an order, and how it went."""

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import generics, serializers

from notifications.models import Notification
from notifications.services import CANCELLED_CODE, CANCELLED_MESSAGE, SUPPRESSED_CODE
from orders.selectors import order_list

# What a shop is told of a notification its operators stopped. The full text names the
# operator, their reason for a suppression and where in the admin to lift it: for staff only.
SHOP_MESSAGES = {
    CANCELLED_CODE: CANCELLED_MESSAGE,
    SUPPRESSED_CODE: (
        "not sent: this recipient is suppressed on this channel (the provider refused it for good "
        "earlier, or the customer asked not to be contacted); the operators of this service can lift it"
    ),
}


class NotificationSerializer(serializers.ModelSerializer):
    waits_in_order = serializers.BooleanField(
        read_only=True,
        help_text="Pending because an earlier notification of the order on this channel goes first; "
        "it is sent once that one is sent, dead or cancelled.",
    )
    last_error_message = serializers.SerializerMethodField(
        help_text="Why the last attempt failed, or why the notification was not sent."
    )

    class Meta:
        model = Notification
        fields = [
            "id",
            "channel",
            "event",
            "recipient",
            "status",
            "waits_in_order",
            "attempts",
            "last_error_code",
            "last_error_message",
            "created_at",
            "sent_at",
            "delivered_at",
        ]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.STR)
    def get_last_error_message(self, notification) -> str:
        request = self.context.get("request")
        if request is not None and request.user.is_staff:
            return notification.last_error_message
        return SHOP_MESSAGES.get(notification.last_error_code, notification.last_error_message)


@extend_schema(
    summary="An order's notifications and their delivery status",
    # The URL takes it as ASCII digits, with or without the trailing slash (orderflow.urls).
    parameters=[OpenApiParameter("order_id", int, OpenApiParameter.PATH)],
)
class OrderNotificationList(generics.ListAPIView):
    serializer_class = NotificationSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular describing the API
            return Notification.objects.none()
        order = get_object_or_404(order_list(user=self.request.user), pk=self.kwargs["order_id"])
        return order.notifications.order_by("created_at", "id")
