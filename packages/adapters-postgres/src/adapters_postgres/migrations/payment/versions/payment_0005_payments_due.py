"""Payment database, revision 5: payments wait on the gateway outside any transaction.

A charge is recorded PENDING with the event that asks for it, a refund REFUNDING with the
cancellation; the gateway is called after that commit, and its outcome recorded in a
second transaction. ``payments_due_idx`` finds the ones a crash or a failed call left
waiting, for the sweep; it holds only those (a partial index), so it stays small.

A payment replica from before this revision cannot read a PENDING or REFUNDING payment: its
consumer takes the error for poison and dead-letters the event (docs/runbook.md, Upgrade).
"""

from __future__ import annotations

from adapters_postgres.migrations.common import (
    create_index_concurrently,
    drop_index_concurrently,
    replace_status_check,
)

revision = "payment_0005"
down_revision = "payment_0004"
branch_labels = None
depends_on = None
STATUSES = ("PENDING", "SUCCEEDED", "FAILED", "REFUNDING", "REFUNDED")
BEFORE = ("SUCCEEDED", "FAILED", "REFUNDED")


def upgrade() -> None:
    replace_status_check("payments", STATUSES)
    create_index_concurrently(
        "payments_due_idx", "payments", ["updated_at", "id"], "status IN ('PENDING', 'REFUNDING')"
    )


def downgrade() -> None:
    """Fails, changing nothing, while a payment is still due."""
    replace_status_check("payments", BEFORE, widening=False)
    drop_index_concurrently("payments_due_idx", "payments")
