"""Revisions of the payment database, oldest first by their down_revision chain."""
