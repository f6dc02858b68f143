"""A registry with its metadata service (a real ``imagewright serve`` process) for launch tests.

The stack's image ``tiny`` is 1 MiB of zeros: QEMU runs it for as long as it is let (SeaBIOS
finds nothing to boot and waits), which is all the lifecycle tests need without a boot.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.fixtures.metadata_service import MetadataStack, start_stack

from imagewright.compute.instance import running_instance_processes


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetadataStack]:
    directory = tmp_path_factory.mktemp("launch")
    started = start_stack(directory / "data")
    try:
        yield started
    finally:
        _end_leftovers(started)
        started.server.stop()


def _end_leftovers(stack: MetadataStack) -> None:
    """Whatever a failed test left running: ended so it cannot outlive the suite."""
    for pids in running_instance_processes(stack.server.data_dir / "instances").values():
        for pid in pids:
            os.kill(pid, signal.SIGKILL)


def iw(stack: MetadataStack, *args: str, check: bool = True) -> Any:
    return stack.server.imagewright(*args, check=check)


def iw_json(stack: MetadataStack, *args: str) -> Any:
    return json.loads(iw(stack, *args, "--json").stdout)


def ps(stack: MetadataStack) -> dict[str, Any]:
    result: dict[str, Any] = iw_json(stack, "ps")
    return result


def state_of(stack: MetadataStack, instance_id: str) -> dict[str, Any] | None:
    return next((row for row in ps(stack)["instances"] if row["id"] == instance_id), None)


def wait_for(predicate: Any, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.3)


def process_exists(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


#: Printed on the serial port by ``serial_hello_disk``'s boot sector.
HELLO = b"imagewright-console-test"


def serial_hello_disk(path: Path) -> Path:
    """A 1 MiB raw disk whose MBR boot code writes ``HELLO`` and a login prompt to COM1 (0x3f8) and halts.

    16-bit real mode at 0x7c00: ``xor ax,ax; mov ds,ax; cld; mov dx,0x3f8; mov si,msg;
    l: lodsb; test al,al; jz h; out dx,al; jmp l; h: hlt; jmp h; msg: db ...,13,10,0``.
    """
    code = bytes.fromhex("31c0 8ed8 fc baf803 be167c ac 84c0 7403 ee ebf8 f4 ebfd".replace(" ", ""))
    assert len(code) == 22
    sector = bytearray(512)
    sector[: len(code)] = code
    message = HELLO + b"\r\nhello login: \0"  # a getty's prompt ends no line
    sector[22 : 22 + len(message)] = message
    sector[510:512] = b"\x55\xaa"
    path.write_bytes(bytes(sector) + bytes((1 << 20) - 512))
    return path
