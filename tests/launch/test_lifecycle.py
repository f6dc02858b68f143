"""run / ps / stop / rm / console against a registry started as a process, without booting a guest.

QEMU really runs (TCG) on the registry's 1 MiB blank image: SeaBIOS finds nothing to boot and
waits, which is enough to check everything but the guest: the cache (one download, checked
against the image's sha512 with hashlib), the overlay (qemu-img info/check), the QEMU process
(its /proc command line), the supervisor surviving a kill -9 of the CLI, and that stop and rm
leave no process, no overlay and no record behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from tests.fixtures.metadata_service import MetadataStack
from tests.fixtures.registry import BIN, free_port
from tests.fixtures.tools import run
from tests.launch.conftest import (
    HELLO,
    iw,
    iw_json,
    process_exists,
    ps,
    serial_hello_disk,
    state_of,
    wait_for,
)

from imagewright.compute.instance import running_instance_processes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def test_run_from_the_registry_then_ps_stop_rm_leave_nothing(stack: MetadataStack) -> None:
    data = stack.server.data_dir
    first = iw_json(stack, "run", "tiny", "--name", "blank", "--detach", "--tokens", "required")
    second = iw_json(stack, "run", stack.image_id, "--detach")

    # One download, into the cache, equal to the registry's bytes (by its recorded sha512).
    assert (first["image_downloaded"], second["image_downloaded"]) == (True, False)
    assert first["image"] == second["image"]
    cached = Path(first["image"])
    assert cached.is_relative_to(data / "cache" / "images" / stack.image_id)
    with stack.server.api(stack.server.token()) as admin:
        recorded = admin.get(f"/image/v2/images/{stack.image_id}").json()
    assert hashlib.sha512(cached.read_bytes()).hexdigest() == recorded["os_hash_value"]

    rows = {row["id"]: row for row in ps(stack)["instances"]}
    for launched in (first, second):
        row = rows[launched["id"]]
        assert (row["state"], row["context"], row["accelerator"]) == ("running", "metadata", "tcg")
        argv = cmdline(row["qemu_pid"])
        assert argv[argv.index("-name") + 1] == f"imagewright-instance-{launched['id']}"
        drive = argv[argv.index("-drive") + 1]
        overlay = Path(launched["directory"]) / "disk.qcow2"
        assert drive.startswith(f"file={overlay},format=qcow2,")
        assert f"backing.driver=raw,backing.file.filename={cached}" in drive
        info = json.loads(run("qemu-img", "info", "-U", "--output=json", overlay).stdout)
        assert (info["format"], info["virtual-size"]) == ("qcow2", 1 << 20)
        assert "backing-filename" not in info  # the base is given to QEMU, never named in a header
        assert stack.channel.signature_path(launched["id"]).is_file()
    assert rows[first["id"]]["name"] == "blank"
    human = iw(stack, "ps").stdout
    assert f"{first['id']}   blank" in human and "running" in human

    pid = rows[first["id"]]["qemu_pid"]
    stopped = iw(stack, "stop", first["id"], "--timeout", "1").stdout
    assert stopped.strip() == f"instance {first['id']} stopped (quit)"  # SeaBIOS ignores ACPI
    assert not process_exists(pid)
    row = state_of(stack, first["id"])
    assert row is not None and (row["state"], row["exit_status"]) == ("stopped", 0)
    run("qemu-img", "check", Path(first["directory"]) / "disk.qcow2")  # closed cleanly

    # rm: the stopped one at once; the running one only with --force.
    refused = iw(stack, "rm", second["id"], check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip().endswith(
        f"The instance {second['id']} is running; stop it first, or use --force."
    )
    second_pid = rows[second["id"]]["qemu_pid"]
    assert iw(stack, "rm", first["id"]).stdout.strip() == f"instance {first['id']} removed"
    assert iw(stack, "rm", second["id"], "--force").stdout.strip() == (
        f"instance {second['id']} removed (stopped: quit)"
    )
    assert not process_exists(second_pid)
    for launched in (first, second):
        assert not Path(launched["directory"]).exists()
        assert not stack.channel.signature_path(launched["id"]).exists()
        assert iw(stack, "instance", "show", launched["id"], check=False).returncode == 1
        assert launched["id"] not in running_instance_processes(data / "instances")
    assert ps(stack) == {"instances": [], "orphans": []}
    assert cached.is_file()  # the cache outlives the instances


def test_kill_9_of_the_cli_during_run_leaves_an_instance_ps_reports_and_rm_cleans(
    stack: MetadataStack,
) -> None:
    cli = subprocess.Popen(
        [str(BIN / "imagewright"), "run", "tiny", "--name", "killed-cli", "--context", "nocloud",
         "--data-dir", str(stack.server.data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for(
            lambda: any(
                r["name"] == "killed-cli" and r["state"] == "running" for r in ps(stack)["instances"]
            ),
            "the instance running",
        )
        os.kill(cli.pid, signal.SIGKILL)
        cli.wait()
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    row = next(r for r in ps(stack)["instances"] if r["name"] == "killed-cli")
    assert row["state"] == "running" and process_exists(row["qemu_pid"])
    assert Path(row["console_log"]).is_file()
    directory = Path(row["console_log"]).parent
    assert (directory / "context.iso").is_file()
    label = run("blkid", "-o", "value", "-s", "LABEL", directory / "context.iso").stdout.decode().strip()
    assert label == "cidata"

    assert iw(stack, "rm", row["id"], "--force").returncode == 0
    assert not process_exists(row["qemu_pid"])
    assert not directory.exists()
    assert all(r["id"] != row["id"] for r in ps(stack)["instances"])


def test_an_orphaned_qemu_is_reported_and_rm_force_ends_it(stack: MetadataStack) -> None:
    launched = iw_json(stack, "run", "tiny", "--name", "orphan", "--detach")
    pid = state_of(stack, launched["id"])["qemu_pid"]  # type: ignore[index]
    # Its records go (as an operator deleting the instance record would), its QEMU stays.
    iw(stack, "instance", "delete", launched["id"])
    report = ps(stack)
    assert report["instances"] == []
    assert report["orphans"] == [{"id": launched["id"], "pids": [pid], "known": False}]
    assert (
        f"orphan: QEMU pid {pid} runs instance {launched['id']} (not in the catalog)"
        in iw(stack, "ps").stdout
    )

    refused = iw(stack, "rm", launched["id"], check=False)
    assert refused.returncode == 1 and "use --force to end it" in refused.stderr
    assert iw(stack, "rm", launched["id"], "--force").returncode == 0
    assert not process_exists(pid)
    assert not Path(launched["directory"]).exists()
    assert ps(stack) == {"instances": [], "orphans": []}


def test_a_registry_image_whose_bytes_changed_is_refused_and_leaves_nothing(stack: MetadataStack) -> None:
    with stack.server.api(stack.server.token()) as admin:
        image = admin.create_image(name="tampered", disk_format="raw", container_format="bare")
        assert admin.upload(image["id"], b"\0" * 65536).status_code == 204
        location = admin.get(f"/image/v2/images/{image['id']}").json()
    blobs = [b for b in stack.server.blobs() if image["id"] in b]
    assert len(blobs) == 1, location
    blob = stack.server.images_dir / blobs[0]
    with blob.open("r+b") as handle:
        handle.write(b"\1")
    before = iw_json(stack, "instance", "list")

    result = iw(stack, "run", "tampered", "--detach", check=False)

    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"imagewright: error: The data of image {image['id']} does not match its recorded md5 "
        "checksum; the copy was discarded."
    )
    cache = stack.server.data_dir / "cache" / "images" / image["id"]
    assert not cache.exists() or list(cache.iterdir()) == []
    assert iw_json(stack, "instance", "list") == before


def test_a_file_with_a_config_drive_and_its_console(stack: MetadataStack, tmp_path: Path) -> None:
    disk = serial_hello_disk(tmp_path / "hello.raw")
    port = free_port()
    launched = iw_json(
        stack, "run", str(disk), "--context", "configdrive", "--detach", "--memory", "128",
        "--port-forward", f"{port}:22",
    )  # fmt: skip
    try:
        # QEMU's user network listens on the forwarded port (the guest itself answers nothing).
        with socket.create_connection(("127.0.0.1", port), timeout=30):
            pass
        assert launched["image"] == str(disk) and launched["image_downloaded"] is False
        log = Path(launched["console_log"])
        wait_for(lambda: HELLO in log.read_bytes(), "the boot sector's line on the console")
        printed = iw(stack, "console", launched["id"]).stdout
        assert printed.splitlines() == [HELLO.decode(), "hello login: "]
        waited = iw(stack, "wait", launched["id"], "--for", "login", "--timeout", "60")
        assert waited.stdout.strip() == f"instance {launched['id']}: login prompt"
        label = run("blkid", "-o", "value", "-s", "LABEL", Path(launched["directory"]) / "context.iso")
        assert label.stdout.decode().strip() == "config-2"
    finally:
        iw(stack, "rm", launched["id"], "--force")
    assert iw(stack, "console", launched["id"], check=False).returncode == 1
    assert disk.read_bytes()[:22] == bytes.fromhex(
        "31c08ed8fcbaf803be167cac84c07403eeebf8f4ebfd"
    )  # only read


def test_the_metadata_context_needs_a_running_metadata_service(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    disk = serial_hello_disk(tmp_path / "hello.raw")
    result = subprocess.run(
        [str(BIN / "imagewright"), "run", str(disk), "--detach", "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    socket_path = tmp_path / "data" / "metadata" / "socket" / "guest.sock"
    assert result.stderr.startswith(
        f"imagewright: error: No metadata service listens on {socket_path}; start "
    )
    assert result.stderr.count("\n") == 1
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == []
