"""Alembic environment of the notification database: runs on the connection migrate hands over."""

from adapters_postgres.migrations import run_environment

run_environment()
