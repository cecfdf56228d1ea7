"""Fixtures of the integration tests: the SQLAlchemy tests on PostgreSQL take the
root conftest's ``pg_server`` (one private server per test process, shared with the
queue suites)."""
