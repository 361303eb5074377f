"""Integration tests of adapters_postgres on a real PostgreSQL."""
