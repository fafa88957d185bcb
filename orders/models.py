from decimal import Decimal

from django.conf import settings
from django.db import models


class OrderStatus(models.TextChoices):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    PROCESSING = "processing"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"


# The workflow: the statuses an order may move to from each status. Nothing else is allowed.
ALLOWED_TRANSITIONS: dict[str, tuple[str, ...]] = {
    OrderStatus.PENDING: (OrderStatus.CONFIRMED, OrderStatus.CANCELLED),
    OrderStatus.CONFIRMED: (OrderStatus.PROCESSING, OrderStatus.CANCELLED),
    OrderStatus.PROCESSING: (OrderStatus.SHIPPED, OrderStatus.CANCELLED),
    OrderStatus.SHIPPED: (OrderStatus.DELIVERED,),
    OrderStatus.DELIVERED: (),
    OrderStatus.CANCELLED: (),
}


class ChangeSource(models.TextChoices):
    API = "api"
    ADMIN = "admin"
    SYSTEM = "system"


class Order(models.Model):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="orders", help_text="API consumer"
    )
    customer_name = models.CharField(max_length=200)
    customer_email = models.EmailField(blank=True)
    customer_phone = models.CharField(max_length=20, blank=True, help_text="E.164")
    status = models.CharField(max_length=20, choices=OrderStatus, default=OrderStatus.PENDING)
    total = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal("0.00"))
    # Kept with the order: changing ORDERS_CURRENCY later does not relabel the orders before it.
    currency = models.CharField(
        max_length=3, blank=True, default="", help_text="ISO 4217 code; empty when none was configured"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="order_owner_created"),
            models.Index(fields=["status", "-created_at"], name="order_status_created"),
            models.Index(fields=["customer_email"], name="order_customer_email"),
            models.Index(fields=["customer_phone"], name="order_customer_phone"),
        ]
        constraints = [
            models.CheckConstraint(condition=~models.Q(customer_email="", customer_phone=""), name="order_has_contact"),
        ]

    def __str__(self) -> str:
        return f"Order #{self.pk}"

    @property
    def allowed_next_statuses(self) -> tuple[str, ...]:
        return ALLOWED_TRANSITIONS[self.status]


class OrderItem(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="items")
    sku = models.CharField(max_length=64)
    name = models.CharField(max_length=200)
    quantity = models.PositiveIntegerField()
    unit_price = models.DecimalField(max_digits=10, decimal_places=2)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(quantity__gte=1), name="orderitem_quantity_positive"),
            models.CheckConstraint(condition=models.Q(unit_price__gte=0), name="orderitem_price_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} x {self.name}"

    @property
    def line_total(self) -> Decimal:
        return self.unit_price * self.quantity


class OrderStatusChange(models.Model):
    """One row per status change, and one for the creation (from_status blank)."""

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="status_changes")
    from_status = models.CharField(max_length=20, choices=OrderStatus, blank=True)
    to_status = models.CharField(max_length=20, choices=OrderStatus)
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    source = models.CharField(max_length=10, choices=ChangeSource)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.from_status or '∅'} → {self.to_status}"


class IdempotencyKey(models.Model):
    """Remembers which order an API consumer's `Idempotency-Key` created."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    request_fingerprint = models.CharField(max_length=64)
    order = models.OneToOneField(Order, null=True, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "key"], name="idempotency_key_per_owner")]

    def __str__(self) -> str:
        return self.key
