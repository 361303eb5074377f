"""PostgreSQL adapters for core_saga ports: tables, unit of work, outbox, inbox, migrations.

Where things are:

- ``engine``: ``create_engine(url)`` (any ``postgresql://`` URL → asyncpg), database admin.
- ``migrations``: ``migrate``, ``downgrade``, ``is_at_head`` per service database.
- ``uow``: ``order_uow_factory(engine)`` and the three others; what the handlers take.
- ``outbox``: ``PostgresOutboxStore`` (the relay's port, also for the outbox-age metric).
- ``relay``: ``RelayRunner``, one leader per database via an advisory lock.
- ``embedded``: ``start_embedded(data_dir)``, PostgreSQL without Docker (extra ``embedded``).
"""
