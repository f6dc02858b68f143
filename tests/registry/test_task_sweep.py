"""The task sweep on a real catalog and store, in-process: an abandoned task is requeued while it has
attempts left, then failed with the reason and its import undone.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from imagewright.catalog import images, imports
from imagewright.catalog import tasks as task_rows
from imagewright.catalog.database import Catalog
from imagewright.catalog.task_models import IMPORT_TASK_TYPE
from imagewright.service.leases import this_holder
from imagewright.service.tasks.environment import TaskEnvironment
from imagewright.service.tasks.queue import EmbeddedQueue
from imagewright.service.tasks.sweep import sweep_tasks
from imagewright.stores import open_stores


@pytest.fixture
def environment(tmp_path: Path) -> Iterator[TaskEnvironment]:
    catalog = Catalog.for_data_dir(tmp_path)
    catalog.upgrade()
    stores = open_stores([], tmp_path)
    stores.check()
    yield TaskEnvironment(
        catalog=catalog, stores=stores, scratch_root=tmp_path / "tasks", queue=EmbeddedQueue()
    )
    catalog.dispose()


def _dead_holder() -> str:
    """This host, a pid that runs, a start time it does not have: a process that is gone."""
    host, pid, _start = this_holder().rsplit("/", 2)
    return f"{host}/{pid}/999999999"


def _importing_task(environment: TaskEnvironment, max_attempts: int) -> tuple[str, str]:
    with environment.catalog.writing() as session:
        image = images.create_image(
            session, {"name": "x", "disk_format": "raw", "container_format": "bare"}, {}, []
        )
        task = task_rows.create_task(
            session,
            task_type=IMPORT_TASK_TYPE,
            owner="p",
            user_id="u",
            image_id=image.id,
            task_input={"import_req": {"method": {"name": "web-download"}}, "backend": ["default"]},
            private={},
            queue="embedded",
            max_attempts=max_attempts,
        )
        imports.begin_import(session, image, task.id, "web-download", ["default"])
        return image.id, task.id


def _claim_and_write(environment: TaskEnvironment, image_id: str, task_id: str) -> str:
    """A worker claims the task, writes a blob (named first) and dies."""
    with environment.catalog.writing() as session:
        assert task_rows.claim_task(session, task_id, _dead_holder(), timedelta(seconds=300))
    store = environment.stores.default
    location = store.location_for(f"{image_id}.partial")
    with environment.catalog.writing() as session:
        imports.add_pending_blob(session, image_id, task_id, store.info.id, location)
    with store.writer(store.key_of(location)) as writer:
        writer.write(b"half an image")
        writer.finish()
    return location


def test_abandoned_task_is_requeued_then_failed_with_the_reason(environment: TaskEnvironment) -> None:
    image_id, task_id = _importing_task(environment, max_attempts=2)
    store = environment.stores.default

    first = _claim_and_write(environment, image_id, task_id)
    report = sweep_tasks(environment)
    assert report.requeued == [task_id] and report.failed == []
    assert not store.exists(first)
    with environment.catalog.reading() as session:
        task = task_rows.get_task(session, task_id)
        assert task.status == "pending" and task.holder is None
        assert "stopped; it runs again (attempt 2 of 2)" in task.message
        assert images.get_image(session, image_id).status == "importing"

    second = _claim_and_write(environment, image_id, task_id)
    report = sweep_tasks(environment)
    assert report.failed == [task_id] and report.requeued == []
    assert not store.exists(second)
    with environment.catalog.reading() as session:
        task = task_rows.get_task(session, task_id)
        assert task.status == "failure"
        assert task.message.startswith("The worker running this task (")
        assert "stopped before it finished, 2 time(s)" in task.message
        image = images.get_image(session, image_id)
        assert image.status == "queued"
        assert imports.property_of(image, imports.IMPORT_TASK_PROPERTY) is None
        assert imports.property_of(image, imports.FAILED_IMPORT_PROPERTY) == "default"
        assert imports.referenced_blob_locations(session) == set()
    # A second sweep finds nothing more to do.
    assert not sweep_tasks(environment)


def test_a_live_holder_is_left_alone(environment: TaskEnvironment) -> None:
    _image_id, task_id = _importing_task(environment, max_attempts=3)
    with environment.catalog.writing() as session:
        assert task_rows.claim_task(session, task_id, this_holder(), timedelta(seconds=300))
    assert not sweep_tasks(environment)
    with environment.catalog.reading() as session:
        assert task_rows.get_task(session, task_id).status == "processing"
