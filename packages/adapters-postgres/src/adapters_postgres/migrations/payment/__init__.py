"""Alembic script directory of the payment database."""
