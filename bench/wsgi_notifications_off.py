"""orderflow's WSGI application with the notifications receivers disconnected by their
dispatch_uids: an order writes no outbox rows and publishes nothing. bench/load.py serves it
for its "off" phases (`gunicorn bench.wsgi_notifications_off`); nothing else changes.
"""

from orderflow.wsgi import application
from orders.signals import order_placed, order_status_changed

RECEIVERS = ((order_placed, "notifications.order_placed"), (order_status_changed, "notifications.order_status_changed"))

for signal, dispatch_uid in RECEIVERS:
    if not signal.disconnect(dispatch_uid=dispatch_uid):
        # A renamed receiver would otherwise leave notifications on in the "off" phases.
        raise RuntimeError(f"no receiver with dispatch_uid {dispatch_uid!r} to disconnect")

__all__ = ["application"]
