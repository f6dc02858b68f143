"""A worker killed at an import's last step: the image turns active and its task ends together.

The import's last catalog write (``imports.complete_import``) and the end of its task
(``TaskRun.succeed_in``) commit in one transaction. A worker that dies around that commit must
leave either both done or neither: never an ``active`` image under a task still ``processing``,
whose retry would find the image taken and revert it.

Each kill point is reached deterministically with PostgreSQL's own row locks — nothing in the
code under test knows about the test. The download is held by the test's HTTP server
(``/gated/``) until the test holds its lock; then the worker runs on until it waits on that lock,
seen in ``pg_stat_activity``; then ``kill -9`` of the worker's process group, and the lock is let
go. Two ``imagewright worker`` processes on ``--task-queue procrastinate``; the other one is the
"restart".

- Before the commit: the test holds the task's row. The worker's completing transaction has made
  the image active and waits to end the task — and for everyone else the image is still
  ``importing`` (nothing is committed without the task's end). After the kill the other worker
  runs the task again (attempt 2) to ``active``.
- After the commit: the test holds the Procrastinate job's row. The worker has committed (the
  image ``active``, the task ``success``, seen from the test's own connection) and waits to mark
  its job done. After the kill the job is put back (as the sweep, or an operator's "retry
  stalled jobs", would); the other worker runs it, finds the task finished, and changes nothing:
  the image stays ``active``, the task ``success`` after one attempt, one blob.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.fixtures.image_http import ImageHTTPServer, image_http_server
from tests.fixtures.registry import Api, RegistryServer
from tests.registry.imports_common import (
    Images,
    build_images,
    download,
    image_of,
    start_import,
    wait_for_task,
)
from tests.registry.test_import_workers import _holder_pid, _start_worker, scratch_leftovers_in

from imagewright.service.tasks.procrastinate_queue import JobQueue

pytestmark = pytest.mark.slow

WAIT = 120.0


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    return build_images(tmp_path_factory.mktemp("commit-kill-images"))


@pytest.fixture
def http(images: Images) -> Iterator[ImageHTTPServer]:
    with image_http_server(images.root) as server:
        yield server


class Cluster:
    """The API server and two workers on one fresh PostgreSQL database."""

    def __init__(self, database: str, tmp_path: Path, http: ImageHTTPServer) -> None:
        self.database = database
        self.server = RegistryServer(
            tmp_path / "data",
            database=database,
            extra_args=[
                "--task-queue",
                "procrastinate",
                "--web-download-allow",
                f"{http.url}/",
                "--task-lease",
                "5",
                "--sweep-interval",
                "2",
            ],
        )
        self.scratch = tmp_path / "scratch"
        self.logs = [tmp_path / "worker-0.log", tmp_path / "worker-1.log"]
        self.workers: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        self.server.start()
        self.workers = [
            _start_worker(self.database, self.server.data_dir, self.scratch, log) for log in self.logs
        ]

    def stop(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
                try:
                    worker.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(worker.pid, signal.SIGKILL)
                    worker.wait()
        self.server.stop()

    def query(self, sql: str, *args: Any) -> Any:
        import psycopg

        with psycopg.connect(self.database, autocommit=True) as db:
            return db.execute(sql, args).fetchone()  # type: ignore[arg-type]

    def kill(self, pid: int) -> subprocess.Popen[bytes]:
        """kill -9 the worker ``pid`` (its whole process group); returns the survivor."""
        victim = next(w for w in self.workers if w.pid == pid)
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
        return next(w for w in self.workers if w is not victim)


@pytest.fixture
def cluster(pg: Any, tmp_path: Path, http: ImageHTTPServer) -> Iterator[Cluster]:
    running = Cluster(pg.fresh_database(), tmp_path, http)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def _held_download(cluster: Cluster, api: Api, http: ImageHTTPServer) -> tuple[str, str, int]:
    """Start a web-download from ``/gated/``; once a worker is downloading: (image, task, its pid)."""
    image = api.create_image(name="held", disk_format="qcow2", container_format="bare")
    start_import(api, image["id"], {"name": "web-download", "uri": f"{http.url}/gated/disk.qcow2"})
    assert http.gated.wait(WAIT), "no worker started the download"
    status, holder, task_id = cluster.query(
        "SELECT status, holder, id FROM tasks WHERE image_id = %s", image["id"]
    )
    assert status == "processing" and holder, (status, holder)
    return image["id"], task_id, _holder_pid(holder)


@contextlib.contextmanager
def _row_locked(database: str, sql: str, *args: Any) -> Iterator[None]:
    """Hold ``SELECT … FOR UPDATE`` on the rows of ``sql`` until the block ends."""
    import psycopg

    with psycopg.connect(database) as db:
        assert db.execute(sql, args).fetchall(), f"nothing to lock: {sql} {args}"
        try:
            yield
        finally:
            db.rollback()


def _wait_blocked(cluster: Cluster, statement: str) -> None:
    """Until a backend waits on a lock while running a statement that contains ``statement``."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        row = cluster.query(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query ILIKE %s",
            f"%{statement}%",
        )
        if row[0]:
            return
        time.sleep(0.05)
    raise AssertionError(f"no worker came to wait on the lock ({statement})")


def _assert_imported(api: Api, image_id: str, images: Images, cluster: Cluster, attempts: int) -> None:
    task = wait_for_task(api, image_id)
    assert task["status"] == "success", task
    assert task["attempts"] == attempts, task
    shown = image_of(api, image_id)
    assert shown["status"] == "active", shown
    assert shown["checksum"] == images.md5(images.qcow2)
    assert shown["os_hash_value"] == images.sha512(images.qcow2)
    assert download(api, image_id) == images.qcow2.read_bytes()
    deadline = time.monotonic() + 30
    while (
        len(cluster.server.blobs()) != 1 or scratch_leftovers_in(cluster.scratch)
    ) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(cluster.server.blobs()) == 1, cluster.server.blobs()
    assert scratch_leftovers_in(cluster.scratch) == []


def test_killed_before_the_commit_nothing_is_active_and_the_retry_completes(
    cluster: Cluster, http: ImageHTTPServer, images: Images
) -> None:
    with cluster.server.api(cluster.server.token()) as api:
        image_id, task_id, pid = _held_download(cluster, api, http)
        with _row_locked(cluster.database, "SELECT id FROM tasks WHERE id = %s FOR UPDATE", task_id):
            http.gate.set()
            # The completing transaction: the image made active, then the task's end — waiting.
            _wait_blocked(cluster, "finished_at")
            # Not committed: for everyone else the image is still importing under a running task.
            assert cluster.query("SELECT status FROM images WHERE id = %s", image_id)[0] == "importing"
            assert cluster.query("SELECT status FROM tasks WHERE id = %s", task_id)[0] == "processing"
            survivor = cluster.kill(pid)
        _assert_imported(api, image_id, images, cluster, attempts=2)
        assert survivor.poll() is None


def test_killed_after_the_commit_the_image_stays_active_and_a_rerun_changes_nothing(
    cluster: Cluster, http: ImageHTTPServer, images: Images
) -> None:
    with cluster.server.api(cluster.server.token()) as api:
        image_id, task_id, pid = _held_download(cluster, api, http)
        (job_id,) = cluster.query("SELECT id FROM procrastinate_jobs WHERE args->>'task_id' = %s", task_id)
        with _row_locked(
            cluster.database, "SELECT id FROM procrastinate_jobs WHERE id = %s FOR UPDATE", job_id
        ):
            http.gate.set()
            _wait_blocked(cluster, "procrastinate_finish_job")
            # Committed together: the image is active and its task over, before the job is marked.
            assert cluster.query("SELECT status FROM images WHERE id = %s", image_id)[0] == "active"
            assert cluster.query("SELECT status FROM tasks WHERE id = %s", task_id)[0] == "success"
            survivor = cluster.kill(pid)
        assert cluster.query("SELECT status FROM procrastinate_jobs WHERE id = %s", job_id)[0] == "doing"
        queue = JobQueue(cluster.database)
        try:
            assert queue.retry(job_id)
        finally:
            queue.close()
        # The other worker runs the job again: it finds the task finished (the job then goes).
        deadline = time.monotonic() + WAIT
        while cluster.query("SELECT count(*) FROM procrastinate_jobs WHERE id = %s", job_id)[0]:
            assert time.monotonic() < deadline, "the retried job was not run"
            time.sleep(0.2)
        _assert_imported(api, image_id, images, cluster, attempts=1)
        assert survivor.poll() is None
