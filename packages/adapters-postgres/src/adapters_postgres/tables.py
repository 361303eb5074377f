"""SQLAlchemy Core tables, one MetaData per service database (see docs/architecture.md).

The migrations create these tables; this module is what the adapters query. Every service
database also has ``outbox`` and ``processed_events`` (the inbox).
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSON, JSONB

SERVICES: Final = ("order", "inventory", "payment", "notification")

Money = Numeric(20, 2, asdecimal=True)


Timestamp = DateTime(timezone=True)


def _outbox(metadata: MetaData) -> Table:
    """The transactional outbox; ``payload`` is the whole envelope as JSON."""
    return Table(
        "outbox",
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("event_id", Uuid, nullable=False, unique=True),
        Column("topic", Text, nullable=False),
        Column("key", Text, nullable=False),
        Column("event_type", Text, nullable=False),
        Column("payload", JSONB, nullable=False),
        Column("headers", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
        Column("created_at", Timestamp, nullable=False),
        Column("published_at", Timestamp),
        # the relay's claim scans only what waits; retention scans only what left
        Index("outbox_unpublished_idx", "id", postgresql_where=text("published_at IS NULL")),
        Index(
            "outbox_published_at_idx",
            "published_at",
            postgresql_where=text("published_at IS NOT NULL"),
        ),
    )


def _processed_events(metadata: MetaData) -> Table:
    """The inbox: one row per applied event id."""
    return Table(
        "processed_events",
        metadata,
        Column("event_id", Uuid, primary_key=True),
        Column("event_type", Text, nullable=False),
        Column("processed_at", Timestamp, nullable=False, server_default=func.now()),
        Index("processed_events_processed_at_idx", "processed_at"),  # the purge's batches
    )


# The same two tables exist in every service database; the adapters query these objects.
outbox = _outbox(MetaData())
processed_events = _processed_events(MetaData())


def _status_check(column: str, values: tuple[str, ...]) -> CheckConstraint:
    allowed = ", ".join(f"'{value}'" for value in values)
    return CheckConstraint(f"{column} IN ({allowed})", name=f"{column}_valid")


# --- order database ------------------------------------------------------------------------

order_metadata = MetaData()
ORDER_STATUSES: Final = ("PENDING", "STOCK_RESERVED", "CONFIRMED", "CANCELLED")

orders = Table(
    "orders",
    order_metadata,
    Column("id", Uuid, primary_key=True),
    Column("customer_id", Uuid, nullable=False),
    Column("status", Text, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("total_amount", Money, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp),
    Column("deadline_at", Timestamp, nullable=False),
    Column("cancellation_reason", Text),
    _status_check("status", ORDER_STATUSES),
    Index(
        "orders_open_deadline_idx",
        "deadline_at",
        postgresql_where=text("status IN ('PENDING', 'STOCK_RESERVED')"),
    ),
)

order_items = Table(
    "order_items",
    order_metadata,
    Column("order_id", Uuid, ForeignKey("orders.id", ondelete="CASCADE"), primary_key=True),
    Column("line_no", Integer, primary_key=True),
    Column("product_id", Uuid, nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("unit_price", Money, nullable=False),
    CheckConstraint("quantity > 0", name="quantity_positive"),
)

order_status_history = Table(
    "order_status_history",
    order_metadata,
    Column("order_id", Uuid, ForeignKey("orders.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("status", Text, nullable=False),
    Column("at", Timestamp, nullable=False),
    Column("event_id", Uuid, nullable=False),
    Column("event_type", Text, nullable=False),
)

idempotency_keys = Table(
    "idempotency_keys",
    order_metadata,
    Column("key", Text, primary_key=True),
    Column("request_hash", Text, nullable=False),
    Column("status_code", Integer),
    Column("response", JSON),  # json, not jsonb: a replay returns the body byte for byte
    Column("created_at", Timestamp, nullable=False),
    Column("expires_at", Timestamp, nullable=False),
    Index("idempotency_keys_expires_at_idx", "expires_at"),
)

outbox.to_metadata(order_metadata)
processed_events.to_metadata(order_metadata)

# --- inventory database --------------------------------------------------------------------

inventory_metadata = MetaData()
RESERVATION_STATUSES: Final = ("RESERVED", "RELEASED", "SOLD")

products = Table(
    "products",
    inventory_metadata,
    Column("id", Uuid, primary_key=True),
    Column("name", Text, nullable=False),
    Column("stock", BigInteger, nullable=False),
    Column("reserved", BigInteger, nullable=False, server_default=text("0")),
    Column("sold", BigInteger, nullable=False, server_default=text("0")),
    CheckConstraint("stock >= 0", name="stock_not_negative"),
    CheckConstraint("reserved >= 0", name="reserved_not_negative"),
    CheckConstraint("sold >= 0", name="sold_not_negative"),
)

reservations = Table(
    "reservations",
    inventory_metadata,
    Column("order_id", Uuid, primary_key=True),
    Column("status", Text, nullable=False),
    _status_check("status", RESERVATION_STATUSES),
)

reservation_lines = Table(
    "reservation_lines",
    inventory_metadata,
    Column(
        "order_id",
        Uuid,
        ForeignKey("reservations.order_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("product_id", Uuid, ForeignKey("products.id"), primary_key=True),
    Column("quantity", Integer, nullable=False),
    CheckConstraint("quantity > 0", name="quantity_positive"),
    # the foreign key's other side: deleting a product must not scan every line
    Index("reservation_lines_product_id_idx", "product_id"),
)

outbox.to_metadata(inventory_metadata)
processed_events.to_metadata(inventory_metadata)

# --- payment database ----------------------------------------------------------------------

payment_metadata = MetaData()
PAYMENT_STATUSES: Final = ("PENDING", "SUCCEEDED", "FAILED", "REFUNDING", "REFUNDED")
PAYMENTS_DUE: Final = "status IN ('PENDING', 'REFUNDING')"
"""Waiting on the gateway; few at any time, so the sweep's partial index stays small."""

payments = Table(
    "payments",
    payment_metadata,
    Column("id", Uuid, primary_key=True),
    Column("order_id", Uuid, nullable=False, unique=True),
    Column("amount", Money, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", Text, nullable=False),
    Column("reason", Text),
    Column("created_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp),
    _status_check("status", PAYMENT_STATUSES),
    Index("payments_created_at_idx", "created_at", "id"),  # the newest page of GET /api/payments
    Index("payments_due_idx", "updated_at", "id", postgresql_where=text(PAYMENTS_DUE)),
)

cancelled_orders = Table(
    "cancelled_orders",
    payment_metadata,
    Column("order_id", Uuid, primary_key=True),
    Column("cancelled_at", Timestamp, nullable=False, server_default=func.now()),
)

outbox.to_metadata(payment_metadata)
processed_events.to_metadata(payment_metadata)

# --- notification database -----------------------------------------------------------------

notification_metadata = MetaData()
NOTIFICATION_TYPES: Final = ("ORDER_CONFIRMED", "ORDER_CANCELLED")

notifications = Table(
    "notifications",
    notification_metadata,
    Column("id", Uuid, primary_key=True),
    Column("order_id", Uuid, nullable=False, unique=True),
    Column("type", Text, nullable=False),
    Column("recipient", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    _status_check("type", NOTIFICATION_TYPES),
    Index("notifications_created_at_idx", "created_at", "id"),  # the newest page of the list
)

notifications_unsent = Table(
    "notifications_unsent",
    notification_metadata,
    Column("notification_id", Uuid, primary_key=True),
    Column("created_at", Timestamp, nullable=False),
    Index("notifications_unsent_created_at_idx", "created_at", "notification_id"),
)
"""The notifications stored and not yet sent: a row is inserted with its notification and
deleted once it is sent, so the table stays small and ``notifications`` is only ever
inserted into (a flag there would make every send an update of the row and its indexes).
No foreign key: a notification is never deleted, and the check would cost every insert."""

outbox.to_metadata(notification_metadata)
processed_events.to_metadata(notification_metadata)

METADATA: Final = {
    "order": order_metadata,
    "inventory": inventory_metadata,
    "payment": payment_metadata,
    "notification": notification_metadata,
}
