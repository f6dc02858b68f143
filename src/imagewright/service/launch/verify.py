"""``verify``: boot a fresh instance of an image and prove, from outside, that it became what
the cloud told it to be.

The instance gets a hostname, an SSH key and a user-data script made for this run alone
(``verify-<8 hex>``, a new ed25519 key, a script that appends the run's token to
``MARKER_PATH``), through the metadata service or a context medium. Then, without trusting
anything the guest says about itself:

1. ``console``: the serial console shows our agent's ready line for this very instance, or a
   login prompt (a cloud-init image);
2. the instance is stopped (ACPI, then QMP ``quit``: QEMU closes the disk cleanly) and the disk
   it wrote is read back (its overlay on the base, flattened by ``qemu-img`` with the chain
   named explicitly, read through the guest file contract, ``guest.open_guest``);
3. ``hostname``: ``/etc/hostname`` holds the hostname given;
4. ``ssh key``: the key is in root's or a user's ``authorized_keys``;
5. ``user-data``: the marker holds the token exactly once (it ran, and only once);
6. ``ssh host keys``: the guest has host keys, none of them the base image's.

Each check records the seconds it took (the console check: from launch to the line). The
instance is removed afterwards (``keep`` leaves it, stopped, for a look at its files).
"""

from __future__ import annotations

import contextlib
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagewright.compute.instance import InstanceFiles
from imagewright.errors import ImagewrightError, InvalidArgumentError
from imagewright.guest.base import GuestFS
from imagewright.metadata.instance import read_ssh_key_file
from imagewright.programs import qemu_img, ssh_keygen
from imagewright.service.launch import instances

MARKER_PATH = "/var/lib/imagewright-verify.marker"
_HOST_KEY_GLOB = "/etc/ssh/ssh_host_*_key.pub"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    seconds: float
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "seconds": round(self.seconds, 3), "detail": self.detail}


@dataclass
class VerifyReport:
    image_ref: str
    instance_id: str | None = None
    hostname: str = ""
    context: str = ""
    accelerator: str = ""
    checks: list[Check] = field(default_factory=list)
    total_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.image_ref,
            "instance_id": self.instance_id,
            "hostname": self.hostname,
            "context": self.context,
            "accelerator": self.accelerator,
            "ok": self.ok,
            "total_seconds": round(self.total_seconds, 3),
            "checks": [check.to_dict() for check in self.checks],
        }


def user_data_script(token: str) -> bytes:
    return f"#!/bin/sh\necho {token} >> {MARKER_PATH}\n".encode()


def _timed(name: str, work: Callable[[], tuple[bool, str]]) -> Check:
    started = time.monotonic()
    try:
        ok, detail = work()
    except ImagewrightError as err:
        ok, detail = False, str(err)
    return Check(name, ok, time.monotonic() - started, detail)


def _authorized(guest: GuestFS, key_line: str) -> tuple[bool, str]:
    key_fields = key_line.split()[:2]
    candidates = ["/root/.ssh/authorized_keys"]
    with contextlib.suppress(ImagewrightError):
        candidates += guest.glob("/home/*/.ssh/authorized_keys")
    for path in candidates:
        if not guest.is_file(path):
            continue
        for line in guest.read_text(path).splitlines():
            if line.split()[-3:-1] == key_fields or line.split()[:2] == key_fields:
                return True, f"in {path}"
    return False, f"not in {', '.join(candidates)}"


def _host_keys(guest: GuestFS, base_keys: set[str]) -> tuple[bool, str]:
    paths = guest.glob(_HOST_KEY_GLOB)
    if not paths:
        return False, "no SSH host keys in /etc/ssh"
    keys = {guest.read_text(path).split()[1] for path in paths if len(guest.read_text(path).split()) > 1}
    reused = keys & base_keys
    if reused:
        return False, f"{len(reused)} host key(s) are the image's own (every instance would share them)"
    return True, f"{len(paths)} new ({', '.join(p.rsplit('/', 1)[-1] for p in paths)})"


def _base_host_keys(base: Path) -> set[str]:
    from imagewright.guest.session import open_guest

    with open_guest(base) as guest:
        return {
            fields[1]
            for path in guest.glob(_HOST_KEY_GLOB)
            if len(fields := guest.read_text(path).split()) > 1
        }


def verify_image(
    site: instances.Site,
    image_ref: str,
    *,
    context: str = "nocloud",
    tokens: str = "optional",
    timeout: float = 300.0,
    keep: bool = False,
    accelerator: Any = None,
) -> VerifyReport:
    """Boot ``image_ref`` once with a fresh identity and check the result (module docstring)."""
    from imagewright.guest.session import open_guest

    if timeout <= 0:
        raise InvalidArgumentError("A verify time limit must be a positive number of seconds.")
    token = secrets.token_hex(4)
    hostname = f"verify-{token}"
    report = VerifyReport(image_ref, hostname=hostname, context=context)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="imagewright-verify-") as scratch:
        public = ssh_keygen.generate_ed25519(Path(scratch) / "id_ed25519", f"imagewright-verify-{token}")
        key = read_ssh_key_file(public)[0]
        launched = instances.launch(
            site,
            instances.LaunchRequest(
                image_ref=image_ref,
                name=hostname,
                hostname=hostname,
                keys=[("verify", key)],
                user_data=user_data_script(token),
                context=context,
                tokens=tokens,
                accelerator=accelerator,
            ),
        )
    report.instance_id, report.accelerator = launched.instance_id, launched.accelerator
    files: InstanceFiles = launched.files
    try:
        log, running = instances.console_path(site, launched.instance_id)
        seen, detail = instances.wait_for_console(log, launched.instance_id, running, started + timeout)
        report.checks.append(Check("console", seen, time.monotonic() - started, detail))
        stop_started = time.monotonic()
        outcome = instances.stop(site, launched.instance_id, grace=5.0)
        report.checks.append(Check("stop", True, time.monotonic() - stop_started, outcome.how))
        flat = files.directory / "disk-read-back.raw"
        try:
            read_started = time.monotonic()
            qemu_img.flatten_overlay(files.overlay, launched.base.path, launched.base.format, flat)
            with open_guest(flat, format="raw") as guest:
                opened = time.monotonic() - read_started

                def hostname_check() -> tuple[bool, str]:
                    text = guest.read_text("/etc/hostname").strip() if guest.is_file("/etc/hostname") else ""
                    short = hostname.split(".", maxsplit=1)[0]
                    return text in (hostname, short), f"/etc/hostname is {text[:64]!r}"

                def marker_check() -> tuple[bool, str]:
                    if not guest.is_file(MARKER_PATH):
                        return False, f"{MARKER_PATH} is missing: the user-data did not run"
                    lines = guest.read_text(MARKER_PATH).split()
                    runs = lines.count(token)
                    return runs == 1 and len(lines) == 1, f"ran {runs} time(s)"

                checks = [
                    _timed("hostname", hostname_check),
                    _timed("ssh key", lambda: _authorized(guest, key.line)),
                    _timed("user-data", marker_check),
                ]
            base_keys = _base_host_keys(launched.base.path)
            with open_guest(flat, format="raw") as guest:
                checks.append(_timed("ssh host keys", lambda: _host_keys(guest, base_keys)))
            # the read-back (flatten + open) is shared by the checks: charge it to the first
            first = checks[0]
            checks[0] = Check(first.name, first.ok, first.seconds + opened, first.detail)
            report.checks += checks
        finally:
            flat.unlink(missing_ok=True)
    finally:
        if not keep:
            instances.remove(site, launched.instance_id, force=True)
        report.total_seconds = time.monotonic() - started
    return report
