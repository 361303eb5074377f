"""Alembic script directory of the inventory database."""
