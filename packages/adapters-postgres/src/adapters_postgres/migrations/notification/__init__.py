"""Alembic script directory of the notification database."""
