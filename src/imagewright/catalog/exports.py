"""Exports (an image converted for download, until it expires) and the registry's shared secrets."""

from __future__ import annotations

import json
import secrets
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imagewright.catalog.accounts import utcnow
from imagewright.catalog.task_models import Export, RegistrySecret

#: The key export download URLs are signed with (HMAC-SHA256).
EXPORT_SIGNING_KEY = "export_signing_key"


def shared_secret(session: Session, name: str) -> str:
    """The secret ``name``, created (32 random bytes, hex) by the first process that asks."""
    row = session.get(RegistrySecret, name)
    if row is not None:
        return row.value
    value = secrets.token_hex(32)
    try:
        with session.begin_nested():
            session.add(RegistrySecret(name=name, value=value, created_at=utcnow()))
    except IntegrityError:
        # Another process created it first: use theirs.
        row = session.get(RegistrySecret, name)
        assert row is not None
        return row.value
    return value


def add_export(
    session: Session,
    *,
    task_id: str,
    image_id: str,
    store_id: str,
    location: str,
    filename: str,
    export_format: str,
    expires_at: datetime,
) -> Export:
    """Name the export's blob before its first byte (size and checksums come at the end)."""
    row = Export(
        task_id=task_id,
        image_id=image_id,
        store_id=store_id,
        location=location,
        filename=filename,
        format=export_format,
        size=0,
        checksums="{}",
        created_at=utcnow(),
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    return row


def complete_export(session: Session, task_id: str, size: int, checksums: dict[str, str]) -> None:
    row = session.get(Export, task_id)
    if row is not None:
        row.size = size
        row.checksums = json.dumps(checksums, sort_keys=True)
        session.flush()


def get_export(session: Session, task_id: str) -> Export | None:
    return session.get(Export, task_id) if len(task_id) <= 36 else None


def remove_export(session: Session, task_id: str) -> tuple[str, str] | None:
    """Delete the row; returns (store id, location) of its blob for the caller to remove."""
    row = session.get(Export, task_id)
    if row is None:
        return None
    where = (row.store_id, row.location)
    session.delete(row)
    session.flush()
    return where


def expired_exports(session: Session, now: datetime) -> list[str]:
    return list(session.scalars(select(Export.task_id).where(Export.expires_at < now)))
