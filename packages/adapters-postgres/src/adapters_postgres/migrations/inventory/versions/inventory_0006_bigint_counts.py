"""Inventory database, revision 6: a product's stock, reserved and sold counts are bigint.

``sold`` only grows: at a few hundred units a second a best seller passes int4's 2,147,483,647
within months, and from then on every sale of it fails. One ``ALTER TABLE`` rewrites the
table once under ACCESS EXCLUSIVE (a catalogue, not a log: milliseconds to seconds); behind
a long transaction it gives up after ``migrate``'s ``lock_timeout`` and is tried again,
rather than queuing every reservation behind itself.
"""

from __future__ import annotations

from alembic import op

revision = "inventory_0006"
down_revision = "inventory_0005"
branch_labels = None
depends_on = None
COUNTS = ("stock", "reserved", "sold")


def upgrade() -> None:
    _retype("bigint")


def downgrade() -> None:
    _retype("integer")  # fails, changing nothing, if a count no longer fits


def _retype(type_: str) -> None:
    columns = ", ".join(f"ALTER COLUMN {column} TYPE {type_}" for column in COUNTS)
    op.execute(f"ALTER TABLE products {columns}")
