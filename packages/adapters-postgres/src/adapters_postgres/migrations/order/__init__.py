"""Alembic script directory of the order database."""
