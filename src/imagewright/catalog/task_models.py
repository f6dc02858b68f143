"""The catalog's tables for background work: tasks, extra image locations, exports, secrets.

- ``tasks`` (Glance's ``tasks`` + ``task_info``, one row): an import or export, with Glance's
  statuses ``pending`` → ``processing`` → ``success`` | ``failure``, a one-sentence ``message``,
  ``input``/``result`` as JSON text, and what Glance lacks: progress (``progress_stage``,
  ``progress_done`` of ``progress_total`` bytes), the attempt count, and the **task lease**
  (``holder``, ``lease_expires_at``, renewed by a heartbeat while the task runs) so that a task
  whose worker died is found by the sweep and run again or failed with that reason — never left
  ``processing``. ``private`` holds what the worker needs but nobody may read through the API
  (the web-download policy in force when the task was accepted, a remote registry's token).
  ``queue`` says who runs it (``embedded`` threads of ``imagewright serve``, or ``procrastinate``
  workers) and ``queue_job_id`` the Procrastinate job. Tasks outlive their image, as in Glance.
- ``image_locations`` (``models.ImageLocation``, beside the images): blobs of an image besides
  ``images.location`` (its primary copy): ``active`` copies in other stores (copy-image,
  multi-store import), the ``staging`` blob of a glance-direct import, and ``pending`` blobs an
  import task is writing (``task_id``). Every blob the registry writes is named here (or in
  ``images``/``exports``) before its first byte, which is what lets the sweep delete any blob no
  row names.
- ``exports``: the result blob of an export task, until ``expires_at``.
- ``registry_secrets``: random keys shared by every server and worker (the export URL signing key).

Source: Glance ``glance/db/sqlalchemy/models.py`` (``Task``, ``TaskInfo``: columns and sizes).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from imagewright.catalog.models import Base, ImageLocation

__all__ = ["Export", "ImageLocation", "RegistrySecret", "Task"]

TASK_STATUSES = ("pending", "processing", "success", "failure")
FINISHED_TASK_STATUSES = ("success", "failure")
#: Glance's task type of an interoperable import, and ours of an export.
IMPORT_TASK_TYPE = "api_image_import"
EXPORT_TASK_TYPE = "image_export"
TASK_TYPES = (IMPORT_TASK_TYPE, EXPORT_TASK_TYPE)
QUEUES = ("embedded", "procrastinate")
LOCATION_STATUSES = ("active", "staging", "pending")


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_status_queue", "status", "queue"),
        Index("ix_tasks_image_id", "image_id"),
        Index("ix_tasks_owner_created_at", "owner", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    type: Mapped[str] = mapped_column(String(30))
    status: Mapped[str] = mapped_column(String(30))
    owner: Mapped[str | None] = mapped_column(String(255), nullable=True)
    user_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    image_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    #: JSON text: what the caller asked (shown by the API).
    input: Mapped[str] = mapped_column(Text)
    #: JSON text: what the worker needs and nobody may read through the API; cleared at the end.
    private: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: JSON text: the outcome (``{"image_id": …}``, an export's download URL …).
    result: Mapped[str | None] = mapped_column(Text, nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    progress_stage: Mapped[str | None] = mapped_column(String(30), nullable=True)
    progress_done: Mapped[int] = mapped_column(BigInteger, default=0)
    progress_total: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    queue: Mapped[str] = mapped_column(String(20))
    queue_job_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    holder: Mapped[str | None] = mapped_column(String(255), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    #: When a finished task may be removed (Glance's ``task_time_to_live``).
    expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Export(Base):
    __tablename__ = "exports"
    __table_args__ = (Index("ix_exports_expires_at", "expires_at"),)

    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True)
    image_id: Mapped[str] = mapped_column(String(36))
    store_id: Mapped[str] = mapped_column(String(64))
    location: Mapped[str] = mapped_column(String(1024), unique=True)
    #: The name the download URL ends with (``<image id>.qcow2``, ``….raw.gz``).
    filename: Mapped[str] = mapped_column(String(255))
    format: Mapped[str] = mapped_column(String(30))
    size: Mapped[int] = mapped_column(BigInteger)
    #: JSON text: ``{"md5": …, "sha256": …}`` of the exported file.
    checksums: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime)


class RegistrySecret(Base):
    __tablename__ = "registry_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime)
