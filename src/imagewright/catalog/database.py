"""Opening the catalog: an engine for SQLite or PostgreSQL, sessions, and Alembic migrations.

- **SQLite** (the embedded default, ``DATA_DIR/catalog.sqlite``): WAL journal (readers never wait
  for the writer), ``busy_timeout`` (a writer waits for another instead of failing), foreign keys
  on, ``synchronous=NORMAL`` (durable at each checkpoint; WAL keeps it consistent). Write
  transactions start with ``BEGIN IMMEDIATE``: SQLite's deferred BEGIN would fail, not wait,
  when a reader later tries to write while another writer holds the lock.
- **PostgreSQL** through psycopg 3 (``postgresql://…`` is taken to mean ``postgresql+psycopg``).

The schema belongs to Alembic: ``upgrade()`` runs the migrations shipped in
``imagewright/catalog/migrations`` (package data); a SQLite catalog upgrades itself when the
service starts, a PostgreSQL one is upgraded by ``imagewright db upgrade`` (or by ``serve`` on
first use of an empty database). ``check_schema()`` refuses to run against a catalog whose
revision is not the one this version of imagewright knows, in one sentence.

Source: SQLite "Write-Ahead Logging" and "BEGIN TRANSACTION" docs; SQLAlchemy 2.x "Serializable
isolation / Savepoints / Transactional DDL" recipe for pysqlite; Alembic cookbook "Sharing a
Connection across one or more programmatic migration commands".
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, make_url
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker

from imagewright.errors import CatalogError

#: The file an embedded catalog lives in, inside the data dir.
SQLITE_FILE_NAME = "catalog.sqlite"
#: How long a SQLite writer waits for another before it fails (ms).
SQLITE_BUSY_TIMEOUT_MS = 60_000

_MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / SQLITE_FILE_NAME).resolve()}"


def normalise_url(text: str) -> URL:
    """A database URL as SQLAlchemy takes it; ``postgresql://`` means psycopg 3."""
    try:
        url = make_url(text)
    except ArgumentError:
        raise CatalogError(
            f"{redact(text)!r} is not a database URL (use sqlite:///PATH or postgresql://USER@HOST/DB)."
        ) from None
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise CatalogError(
            f"The catalog runs on SQLite or PostgreSQL, not {url.get_backend_name()!r} ({redact(text)})."
        )
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url


def redact(url: str | URL) -> str:
    """The URL without its password, for messages and logs."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError:
        return "<unparsable database URL>"
    return parsed.render_as_string(hide_password=True)


class Catalog:
    """One catalog database: the engine, sessions for reading and writing, and migrations."""

    def __init__(self, url: str | URL, *, pool_size: int = 10) -> None:
        self.url = normalise_url(url) if isinstance(url, str) else url
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        try:
            if self.is_sqlite:
                self.engine = _sqlite_engine(self.url)
            else:
                self.engine = create_engine(
                    self.url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
                )
        except NoSuchModuleError as err:
            raise CatalogError(f"No driver for {redact(self.url)}: {err}.") from None
        writer = self.engine.execution_options(sqlite_begin="IMMEDIATE") if self.is_sqlite else self.engine
        self._reader = sessionmaker(bind=self.engine, expire_on_commit=False)
        self._writer = sessionmaker(bind=writer, expire_on_commit=False)

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> Catalog:
        return cls(sqlite_url(data_dir))

    def __repr__(self) -> str:
        return f"Catalog({redact(self.url)})"

    @contextlib.contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for reads (and writes that do not read first); committed at the end."""
        with _database_errors(self.url), self._reader() as session, session.begin():
            yield session

    @contextlib.contextmanager
    def writing(self) -> Iterator[Session]:
        """A session that reads and then writes: on SQLite it holds the write lock from the start."""
        with _database_errors(self.url), self._writer() as session, session.begin():
            yield session

    # --- schema -------------------------------------------------------------------------------

    def _alembic_config(self) -> Any:
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        return config

    def head_revision(self) -> str:
        from alembic.script import ScriptDirectory

        head = ScriptDirectory.from_config(self._alembic_config()).get_current_head()
        assert head is not None
        return head

    def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with _database_errors(self.url), self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def is_empty(self) -> bool:
        with _database_errors(self.url), self.engine.connect() as connection:
            return not inspect(connection).get_table_names()

    def upgrade(self) -> tuple[str | None, str]:
        """Bring the schema to this version's head; returns (revision before, revision after)."""
        from alembic import command

        before = self.current_revision()
        config = self._alembic_config()
        # Alembic logs each step at INFO through the root logger; the caller reports instead.
        logging.getLogger("alembic").setLevel(logging.WARNING)
        with _database_errors(self.url), self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
        # Data that comes with a schema step but may grow without one (the shipped metadata
        # definitions) is loaded once, when the step creates its tables.
        from imagewright.catalog import metadefs

        with self.writing() as session:
            metadefs.load_defaults_after_upgrade(session, before)
        return before, self.head_revision()

    def check_schema(self) -> None:
        """Refuse a catalog that is not at this version's head, naming the way out.

        A SQLite catalog whose file does not exist is refused before connecting: connecting
        would create an empty file, a leftover of a command that was refused.
        """
        database = self.url.database
        if self.is_sqlite and database and database != ":memory:" and not Path(database).exists():
            current, head = None, self.head_revision()
        else:
            current, head = self.current_revision(), self.head_revision()
        if current == head:
            return
        if current is None:
            raise CatalogError(
                f"The catalog {redact(self.url)} has no imagewright tables yet; run "
                "'imagewright db upgrade --database …' first."
            )
        from alembic.script import ScriptDirectory

        known = {rev.revision for rev in ScriptDirectory.from_config(self._alembic_config()).walk_revisions()}
        if current not in known:
            raise CatalogError(
                f"The catalog {redact(self.url)} is at revision {current}, newer than this imagewright "
                f"knows ({head}); upgrade imagewright."
            )
        raise CatalogError(
            f"The catalog {redact(self.url)} is at revision {current}, older than this imagewright needs "
            f"({head}); run 'imagewright db upgrade'."
        )

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_engine(url: URL) -> Engine:
    database = url.database
    if database and database != ":memory:":
        parent = Path(database).parent
        if not parent.is_dir():
            raise CatalogError(f"The directory {parent} of the catalog {database} does not exist.")
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transactions into our own hands (see the module docstring): pysqlite's implicit
        # BEGIN is turned off and the "begin" hook below issues the right BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


@contextlib.contextmanager
def _database_errors(url: URL) -> Iterator[None]:
    """Turn a driver failure (unreachable server, locked file, disk full) into one sentence."""
    try:
        yield
    except DBAPIError as err:
        if err.connection_invalidated or _is_connection_failure(err):
            raise CatalogError(
                f"The catalog database {redact(url)} cannot be reached: {_first_line(err)}."
            ) from err
        raise


def _is_connection_failure(err: DBAPIError) -> bool:
    name = type(err.orig).__name__ if err.orig is not None else ""
    text = str(err.orig or err).lower()
    return name == "OperationalError" and any(
        hint in text
        for hint in ("connection", "could not connect", "unable to open", "no such host", "server closed")
    )


def _first_line(err: BaseException) -> str:
    inner = getattr(err, "orig", None) or err
    return (str(inner).strip().splitlines() or [type(inner).__name__])[0].rstrip(".")
