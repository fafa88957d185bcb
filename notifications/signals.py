"""Receivers of the orders signals: write the outbox rows in the order's transaction and
publish them when it commits."""

from django.dispatch import receiver

from notifications import services
from notifications.models import Event
from orders.signals import order_placed, order_status_changed


@receiver(order_placed, dispatch_uid="notifications.order_placed")
def queue_order_placed(sender, order, items, **kwargs):
    notifications = services.notifications_create(order=order, event=Event.PLACED, items=items)
    services.notifications_publish_on_commit(notifications)


@receiver(order_status_changed, dispatch_uid="notifications.order_status_changed")
def queue_order_status_changed(sender, order, new_status, **kwargs):
    services.notifications_publish_on_commit(services.notifications_create(order=order, event=new_status))
