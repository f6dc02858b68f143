"""The registry's state: SQLAlchemy models, Alembic migrations and small repositories.

- ``database``: the ``Catalog`` (engine, read/write sessions, ``upgrade``); SQLite in the data
  dir by default, PostgreSQL (psycopg 3) at scale, one schema for both.
- ``models``: the tables. ``migrations/``: Alembic revisions, shipped as package data.
- ``accounts``: domains, projects, users, roles, password hashing (argon2id).
- ``tokens``: tokens (stored hashed) and application credentials; ``AuthContext`` is a caller.
- ``images``: images, tags, properties, members; listing with Glance's filters; upload leases.
- ``image_policy``: Glance's visibility and sharing rules, one table, used by every API.

Repositories take a SQLAlchemy ``Session`` from ``Catalog.reading()`` / ``Catalog.writing()``
and never commit themselves; the caller's ``with`` block is the transaction.
"""
