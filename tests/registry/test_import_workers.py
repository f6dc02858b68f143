"""Workers that die mid-conversion: the task runs again elsewhere, or fails saying why — never stuck.

- PostgreSQL + ``--task-queue procrastinate`` with two ``imagewright worker`` processes: the
  worker converting an import is ``kill -9``-ed; the other one's sweep sees its holder is dead,
  requeues the task (Procrastinate's job back to ``todo``) and runs it to ``active`` (attempt 2);
  the data is the source's (``qemu-img compare``); the server process ran none of it.
- Embedded (SQLite): ``kill -9`` of qemu-img mid-conversion fails the task with that reason and
  leaves the image ``queued`` with nothing stored; ``kill -9`` of the whole server mid-conversion
  and a restart run the task again to ``active`` — for a VMDK (qemu-img converts it) and for a
  qcow2 (read by imagewright itself: ``ops.convert.guest_reader``; the server is stopped as
  soon as its conversion output exists, then killed).

The VMDK is the image whose converter (qemu-img) the tests hold still with SIGSTOP.

Each ends with no blob but the active image's and no scratch file left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.fixtures.image_http import ImageHTTPServer, image_http_server
from tests.fixtures.registry import BIN, RegistryServer, _clean_env
from tests.fixtures.tools import DIE_WITH_TESTS, qemu_img
from tests.registry.imports_common import download, image_of, scratch_leftovers, start_import, wait_for_task

pytestmark = pytest.mark.slow

MiB = 1 << 20
DATA_MIB = 384


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A qcow2 and a VMDK (``big.vmdk`` beside it) holding DATA_MIB MiB of incompressible data:
    a conversion that lasts seconds."""
    root = tmp_path_factory.mktemp("big")
    raw = root / "big.raw"
    with open(raw, "wb") as out:
        for _ in range(DATA_MIB // 8):
            out.write(os.urandom(8 * MiB))
        out.truncate((DATA_MIB + 64) * MiB)
    qcow2 = root / "big.qcow2"
    qemu_img("convert", "-f", "raw", "-O", "qcow2", raw, qcow2)
    qemu_img("convert", "-f", "raw", "-O", "vmdk", raw, root / "big.vmdk")
    raw.unlink()
    return qcow2


@pytest.fixture(scope="module")
def http(big: Path) -> Iterator[ImageHTTPServer]:
    with image_http_server(big.parent) as server:
        yield server


def _task_row(read: Callable[[str], Any], image_id: str) -> dict[str, Any]:
    row = read(image_id)
    return {} if row is None else dict(zip(("id", "status", "stage", "holder", "attempts"), row, strict=True))


_ROW_QUERY = (
    "SELECT id, status, progress_stage, holder, attempts FROM tasks WHERE image_id = {} "
    "ORDER BY created_at DESC"
)


def _sqlite_reader(data_dir: Path) -> Callable[[str], Any]:
    def read(image_id: str) -> Any:
        with sqlite3.connect(f"file:{data_dir / 'catalog.sqlite'}?mode=ro", uri=True, timeout=30) as db:
            return db.execute(_ROW_QUERY.format("?"), (image_id,)).fetchone()

    return read


def _pg_reader(url: str) -> Callable[[str], Any]:
    import psycopg

    def read(image_id: str) -> Any:
        with psycopg.connect(url) as db:
            return db.execute(_ROW_QUERY.format("%s"), (image_id,)).fetchone()  # type: ignore[arg-type]

    return read


def _parent_of(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat[stat.rfind(")") + 2 :].split()[1])


def _is_descendant(pid: int, ancestors: set[int]) -> bool:
    while pid > 1:
        if pid in ancestors:
            return True
        pid = _parent_of(pid)
    return False


def _freeze_converter(ancestors: set[int]) -> int:
    """SIGSTOP the import's ``qemu-img convert`` that one of *ancestors* started, as soon as it exists.

    A stopped converter holds the task in its ``converting`` stage for as long as the test needs:
    polling the catalog alone raced a conversion that can end within one poll on a fast machine.
    """
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or _program_name(int(entry)) != "qemu-img":
                continue
            pid = int(entry)
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            # The import's conversion writes "converted.<format>", or raw into an NBD sink
            # (service.tasks.importing, ops.convert); the qemu-img that makes a raw copy to read
            # the guest from (the image's properties, service.images.publishing) is not it.
            target = [arg for arg in argv if arg][-1:] or [b""]
            conversion = target[0].startswith(b"nbd") or b"converted." in target[0].rpartition(b"/")[2]
            if b"convert" in argv and conversion and _is_descendant(pid, ancestors):
                os.kill(pid, signal.SIGSTOP)
                return pid
        time.sleep(0.002)
    raise AssertionError("no qemu-img convert started within 180 s")


def _wait_converting(
    read: Callable[[str], Any], image_id: str, ancestors: set[int]
) -> tuple[dict[str, Any], int]:
    """The task's row once it is converting, and the (stopped) converter's pid."""
    converter = _freeze_converter(ancestors)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        row = _task_row(read, image_id)
        if row.get("status") == "processing" and row.get("stage") == "converting" and row.get("holder"):
            return row, converter
        time.sleep(0.05)
    raise AssertionError(f"qemu-img is converting but the task says otherwise: {_task_row(read, image_id)}")


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _holder_pid(holder: str) -> int:
    return int(holder.rsplit("/", 2)[1])


def _program_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _start_worker(database: str, data_dir: Path, scratch: Path, log: Path) -> subprocess.Popen[bytes]:
    argv = [
        str(BIN / "imagewright"),
        "worker",
        "--database",
        database,
        "--data-dir",
        str(data_dir),
        "--scratch-dir",
        str(scratch),
        "--task-lease",
        "5",
        "--sweep-interval",
        "1",
    ]
    with open(log, "ab") as out:
        return subprocess.Popen(
            [*DIE_WITH_TESTS, *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_clean_env(),
            start_new_session=True,
        )


def _compare_with_source(api: Any, image_id: str, source: Path, tmp_path: Path) -> None:
    copy = tmp_path / "downloaded.raw"
    copy.write_bytes(download(api, image_id))
    qemu_img("compare", "-f", "raw", "-F", source.suffix[1:], copy, source)


def _stop_when_converting(process: subprocess.Popen[bytes], scratch: Path) -> None:
    """SIGSTOP ``process`` as soon as a conversion output (``.converted.raw.iw-*``) exists under
    ``scratch``: a conversion without qemu-img held mid-way."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if any(scratch.rglob(".converted.raw.*")):
            os.killpg(process.pid, signal.SIGSTOP)  # the server and its workers
            return
        time.sleep(0.002)
    raise AssertionError("no conversion started within 180 s")


def test_postgresql_worker_killed_mid_conversion_is_retried_by_another(
    pg: Any, tmp_path: Path, big: Path, http: ImageHTTPServer
) -> None:
    database = pg.fresh_database()
    data_dir = tmp_path / "data"
    server = RegistryServer(
        data_dir,
        database=database,
        extra_args=[
            "--task-queue",
            "procrastinate",
            "--convert-to",
            "raw",
            "--web-download-allow",
            f"{http.url}/",
            "--task-lease",
            "5",
            "--sweep-interval",
            "2",
        ],
    )
    server.start()
    scratch = tmp_path / "scratch"
    logs = [tmp_path / "worker-0.log", tmp_path / "worker-1.log"]
    workers = [_start_worker(database, data_dir, scratch, log) for log in logs]
    try:
        with server.api(server.token()) as api:
            image = api.create_image(name="big", disk_format="vmdk", container_format="bare")
            start_import(api, image["id"], {"name": "web-download", "uri": f"{http.url}/files/big.vmdk"})
            read = _pg_reader(database)
            row, converter = _wait_converting(read, image["id"], {w.pid for w in workers})
            victim = next(w for w in workers if w.pid == _holder_pid(row["holder"]))
            survivor = next(w for w in workers if w is not victim)
            assert _is_descendant(converter, {victim.pid}), "the task's holder is the one converting"
            os.killpg(victim.pid, signal.SIGKILL)
            _kill(converter)
            victim.wait()
            task = wait_for_task(api, image["id"])
            assert task["status"] == "success", task
            assert task["attempts"] == 2
            shown = image_of(api, image["id"])
            assert shown["status"] == "active"
            assert shown["disk_format"] == "raw" and shown["container_format"] == "bare"
            assert shown["size"] == shown["virtual_size"] == (DATA_MIB + 64) * MiB
            _compare_with_source(api, image["id"], big.with_suffix(".vmdk"), tmp_path)
            assert survivor.poll() is None
            survivor_log = logs[workers.index(survivor)].read_text()
            assert f"task {task['id']} (api_image_import, attempt 2) started" in survivor_log
            # No heavy step ran in the API process (its sweep may be the one that requeued the
            # task: both sweeps run, whichever notices the dead worker first says so in its log).
            server_log = server.log()
            assert f"task {task['id']} (api_image_import" not in server_log
            assert f"task {task['id']} downloaded" not in server_log
            assert len(server.blobs()) == 1
            deadline = time.monotonic() + 30
            while scratch_leftovers_in(scratch) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert scratch_leftovers_in(scratch) == []
    finally:
        for worker in workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
                try:
                    worker.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(worker.pid, signal.SIGKILL)
                    worker.wait()
        server.stop()


def scratch_leftovers_in(scratch: Path) -> list[str]:
    return sorted(os.listdir(scratch)) if scratch.exists() else []


@pytest.fixture
def embedded(tmp_path: Path, http: ImageHTTPServer) -> Iterator[RegistryServer]:
    with RegistryServer(
        tmp_path / "data",
        extra_args=["--convert-to", "raw", "--web-download-allow", f"{http.url}/", "--task-lease", "5"],
    ) as server:
        yield server


def test_embedded_qemu_img_killed_mid_conversion_fails_with_the_reason(
    embedded: RegistryServer, http: ImageHTTPServer
) -> None:
    with embedded.api(embedded.token()) as api:
        image = api.create_image(name="big", disk_format="vmdk", container_format="bare")
        start_import(api, image["id"], {"name": "web-download", "uri": f"{http.url}/files/big.vmdk"})
        assert embedded.process is not None
        _, converter = _wait_converting(
            _sqlite_reader(embedded.data_dir), image["id"], {embedded.process.pid}
        )
        os.kill(converter, signal.SIGKILL)
        task = wait_for_task(api, image["id"])
        assert task["status"] == "failure", task
        assert "qemu-img" in task["message"] and "signal 9" in task["message"], task["message"]
        shown = image_of(api, image["id"])
        assert shown["status"] == "queued" and shown["size"] is None
        assert embedded.blobs() == []
        assert scratch_leftovers(embedded) == []
        assert embedded.process.poll() is None


@pytest.mark.parametrize("fmt", ["vmdk", "qcow2"])
def test_embedded_server_killed_mid_conversion_runs_the_task_again_after_restart(
    embedded: RegistryServer, http: ImageHTTPServer, big: Path, tmp_path: Path, fmt: str
) -> None:
    source = big.with_suffix(f".{fmt}")
    with embedded.api(embedded.token()) as api:
        image = api.create_image(name="big", disk_format=fmt, container_format="bare")
        start_import(api, image["id"], {"name": "web-download", "uri": f"{http.url}/files/{source.name}"})
    assert embedded.process is not None
    converter = None
    if fmt == "vmdk":
        _, converter = _wait_converting(
            _sqlite_reader(embedded.data_dir), image["id"], {embedded.process.pid}
        )
    else:
        _stop_when_converting(embedded.process, embedded.data_dir / "tasks")
    embedded.kill9()
    if converter is not None:
        _kill(converter)
    embedded.start()  # the start-up sweep requeues the task of the dead process
    with embedded.api(embedded.token()) as api:
        task = wait_for_task(api, image["id"])
        assert task["status"] == "success", task
        assert task["attempts"] == 2
        shown = image_of(api, image["id"])
        assert shown["status"] == "active" and shown["disk_format"] == "raw"
        _compare_with_source(api, image["id"], source, tmp_path)
        assert len(embedded.blobs()) == 1
        assert scratch_leftovers(embedded) == []
