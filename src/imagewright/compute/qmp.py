"""Driving a running QEMU through its QMP socket, with the ``qemu.qmp`` library.

``status`` asks ``query-status``; ``shut_down`` asks the guest to power off (ACPI
``system_powerdown``), waits up to ``grace`` seconds for QEMU to end, then ends it with
``quit`` (QEMU flushes and closes its disks before it exits, so the overlay is consistent,
unlike a SIGKILL). Every call has a time limit: a QEMU that does not answer is an
``InstanceControlError``, never a hang. The socket is connected only once it exists (the
library's connect, retried on a missing socket, hung in our tests: recipes/services.md).

Source: QEMU ``qapi/run-state.json`` (query-status, system_powerdown, SHUTDOWN event),
``qapi/misc.json`` (quit); python-qemu-qmp 0.0.x ``qemu.qmp.QMPClient``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from imagewright.errors import InstanceError

T = TypeVar("T")

#: How long one QMP exchange may take (a loaded TCG host answers in well under a second).
EXCHANGE_TIMEOUT = 15.0


class InstanceControlError(InstanceError):
    """QEMU's control socket is missing or does not answer."""


async def _with_client(socket_path: Path, name: str, work: Callable[[Any], Awaitable[T]]) -> T:
    from qemu.qmp import QMPClient

    if not os.path.exists(socket_path):
        raise InstanceControlError(f"The control socket of {name} ({socket_path}) does not exist.")
    client = QMPClient(name)
    try:
        await asyncio.wait_for(client.connect(str(socket_path)), EXCHANGE_TIMEOUT)
    except (TimeoutError, OSError, Exception) as err:  # noqa: BLE001 - the library raises its own ConnectError
        raise InstanceControlError(f"The control socket of {name} does not answer ({err}).") from None
    try:
        return await work(client)
    finally:
        try:
            await asyncio.wait_for(client.disconnect(), EXCHANGE_TIMEOUT)
        except (TimeoutError, EOFError, OSError):
            pass
        except Exception:  # noqa: BLE001, S110 - after 'quit' QEMU closes the socket first
            pass


def status(socket_path: Path, name: str) -> str:
    """QEMU's run state (``running``, ``paused``, ``shutdown`` ...)."""

    async def ask(client: Any) -> str:
        answer = await asyncio.wait_for(client.execute("query-status"), EXCHANGE_TIMEOUT)
        return str(answer["status"])

    return asyncio.run(_with_client(socket_path, name, ask))


def shut_down(socket_path: Path, name: str, *, grace: float, gone: Callable[[], bool]) -> str:
    """Power the guest off: ACPI power button, up to ``grace`` s, then ``quit``.

    ``gone()`` tells whether QEMU has ended. Returns how it ended: ``powered off`` (the guest
    obeyed) or ``quit`` (QEMU was told to end).
    """

    async def work(client: Any) -> str:
        if grace > 0:
            await asyncio.wait_for(client.execute("system_powerdown"), EXCHANGE_TIMEOUT)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                if gone():
                    return "powered off"
                await asyncio.sleep(0.2)
        # QEMU may close the socket as it ends, before it answers
        with contextlib.suppress(EOFError, ConnectionError):
            await asyncio.wait_for(client.execute("quit"), EXCHANGE_TIMEOUT)
        return "quit"

    try:
        return asyncio.run(_with_client(socket_path, name, work))
    except InstanceControlError:
        if gone():
            return "powered off"
        raise
