"""The signals orders sends. They fire inside the order's transaction, so a receiver's
writes commit or roll back with the order; side effects belong in transaction.on_commit."""

from django.dispatch import Signal

# order: the new Order; items: its OrderItem rows, saved.
order_placed = Signal()

# order, old_status, new_status, change: the OrderStatusChange row just written.
order_status_changed = Signal()
