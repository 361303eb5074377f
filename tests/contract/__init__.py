"""Contract tests: one test body per port, run on the in-memory and the Postgres adapter."""
