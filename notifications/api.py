"""`/api/orders/{id}/notifications/`: what the customer was told about an order, and how it went."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers

from notifications.models import Notification
from orders.selectors import order_list


class NotificationSerializer(serializers.ModelSerializer):
    waits_in_order = serializers.BooleanField(
        read_only=True,
        help_text="Pending because an earlier notification of the order on this channel goes first; "
        "it is sent once that one is sent, dead or cancelled.",
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
