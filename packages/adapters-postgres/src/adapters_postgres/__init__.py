"""PostgreSQL adapters for core_saga ports: tables, unit of work, outbox, inbox, migrations."""
