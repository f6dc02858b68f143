"""``verify``: boot a fresh instance of an image and prove, from outside, that it became what
the cloud told it to be.

The instance gets a hostname, an SSH key and a user-data script made for this run alone
(``verify-<8 hex>``, a new ed25519 key, a script that appends the run's token to
``MARKER_PATH``) — or the user's own user-data (``--user-data``) — through the metadata
service or a context medium, on a disk bigger than the image (``DISK_GROWTH``, or
``--disk-size``), under the firmware the image asks for (``firmware.choose_firmware``). Then,
without trusting anything the guest says about itself:

1. ``console``: the serial console shows our agent's ready line for this very instance, or a
   login prompt (a cloud-init image);
2. ``firmware``: what the kernel printed about the firmware agrees with the one started
   (``efi: EFI v2.70 by EDK II`` only under OVMF; ``secureboot: Secure boot enabled`` under
   Secure Boot), and OVMF refused no boot loader — a quiet kernel that says nothing passes
   with that said;
3. ``cloud-init`` (an image with cloud-init, once the login prompt showed: getty does not
   wait for cloud-init's config and final stages, and the user-data runs in the last): the
   console shows cloud-init's final message, which names the datasource it used;
4. ``ssh login`` (an image with an SSH server, ``/usr/sbin/sshd`` or dropbear): the port
   verify forwards to the guest's port 22 answers, and ``ssh`` logs in with the run's private
   key — as cloud-init's default user (``system_info.default_user.name`` of the image's
   ``/etc/cloud/cloud.cfg``), else root — and reads ``/etc/hostname``, which holds the
   hostname given (after a ``sync``: what the guest wrote is on the disk whatever the stop
   does next); the host key it met is kept in the instance's ``known_hosts``;
5. the instance is stopped — QMP ``quit`` at once after our agent's ready line (the agent runs
   ``sync`` before it), ACPI power-off first after a login prompt — QEMU closes the disk
   cleanly, and the disk it wrote is read back (its overlay on the base, flattened by
   ``qemu-img`` with the chain named explicitly, read through the guest file contract,
   ``guest.open_guest``);
6. ``hostname``: ``/etc/hostname`` holds the hostname given;
7. ``ssh key``: the key is in root's or a user's ``authorized_keys``;
8. ``user-data``: the marker holds the token exactly once (it ran, and only once); with the
   user's own user-data: the guest kept exactly those bytes as this instance's user-data and
   ran them — our agent's ``STATE_DIR/<instance-id>/user-data`` and its exit status 0 in
   ``user-data.status``, or cloud-init's ``/var/lib/cloud/instances/<id>/user-data.txt``
   and no error in ``/var/lib/cloud/data/result.json``;
9. ``root filesystem``: the partition holding ``/etc`` now ends at the end of the bigger disk
   (within ``GROWTH_SLACK``: alignment, the GPT backup) and its filesystem fills it, larger
   than in the image (sizes from the superblocks, ``disk.filesystems``);
10. ``ssh host keys``: the guest has host keys, none of them the base image's.

Each check records the seconds it took (the console check: from launch to the line). The
instance is removed afterwards (``keep`` leaves it, stopped, for a look at its files).
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagewright.agent import instance_state_dir
from imagewright.binary import MiB
from imagewright.compute.boot import FirmwareFacts
from imagewright.compute.instance import InstanceFiles
from imagewright.errors import ImagewrightError, InvalidArgumentError
from imagewright.guest.base import GuestFS
from imagewright.guest.locate import choose_region, layout_of
from imagewright.inspection import ImageReport, inspect_image
from imagewright.metadata.instance import read_ssh_key_file
from imagewright.programs import qemu_img, ssh_keygen
from imagewright.programs.ssh import run_remote, ssh_argv
from imagewright.service.launch import instances
from imagewright.service.launch.firmware import FirmwareChoice
from imagewright.units import format_size

MARKER_PATH = "/var/lib/imagewright-verify.marker"
_HOST_KEY_GLOB = "/etc/ssh/ssh_host_*_key.pub"
#: How much bigger than the image verify makes the instance's disk (without ``--disk-size``).
DISK_GROWTH = 128 * MiB
#: How far from the disk's end a grown root partition may end (1 MiB alignment, the GPT's
#: backup header and table), and how much smaller than its partition a grown filesystem may be.
GROWTH_SLACK = 2 * MiB
_CONSOLE_HEAD = 4 * MiB
#: How long a guest that showed a login prompt may take to power off (ACPI) before QEMU quits
#: (systemd's shutdown of a Debian under TCG on a busy machine: 10-20 s).
ACPI_GRACE = 20.0
CLOUD_INIT_INSTANCES = "/var/lib/cloud/instances"
CLOUD_INIT_RESULT = "/var/lib/cloud/data/result.json"
#: An image with one of these has an SSH server: verify logs in.
SSH_SERVERS = ("/usr/sbin/sshd", "/usr/sbin/dropbear")
CLOUD_CFG = "/etc/cloud/cloud.cfg"
CLOUD_INIT_PROGRAM = "/usr/bin/cloud-init"
#: ``system_info: default_user: name: NAME`` in cloud.cfg (the user cloud-init gives the keys).
_DEFAULT_USER = re.compile(r"(?m)^\s+default_user:\s*\n\s+name:\s*([a-z_][a-z0-9_-]{0,31})\s*$")
#: How long one ssh login may take (TCG guests are slow to fork a session).
SSH_LOGIN_TIMEOUT = 90.0


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
    cpus: int = 0
    cpus_reason: str = ""
    firmware: str = ""
    secure_boot: bool = False
    firmware_reason: str = ""
    disk_size: int = 0
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
            "cpus": self.cpus,
            "cpus_reason": self.cpus_reason,
            "firmware": self.firmware,
            "secure_boot": self.secure_boot,
            "firmware_reason": self.firmware_reason,
            "disk_size": self.disk_size,
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
    found = [
        path
        for path in candidates
        if guest.is_file(path)
        and any(
            line.split()[-3:-1] == key_fields or line.split()[:2] == key_fields
            for line in guest.read_text(path).splitlines()
        )
    ]
    if found:
        return True, f"in {', '.join(found)}"
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


@dataclass(frozen=True)
class BaseFacts:
    """What verify needs to know of the image itself (read from the base, never the instance)."""

    host_keys: frozenset[str]
    #: The users an SSH login is tried as, in order; empty: the image has no SSH server.
    login_users: tuple[str, ...]
    cloud_init: bool


def login_users(guest: GuestFS) -> tuple[str, ...]:
    """Whom to log in as: cloud-init's default user (it gets the keys; root is refused), then root."""
    if not any(guest.is_file(path) for path in SSH_SERVERS):
        return ()
    users: list[str] = []
    if guest.is_file(CLOUD_CFG):
        found = _DEFAULT_USER.search(guest.read_text(CLOUD_CFG))
        if found is not None:
            users.append(found.group(1))
    return (*users, "root") if "root" not in users else tuple(users)


def _base_facts(base: Path) -> BaseFacts:
    from imagewright.guest.session import open_guest

    with open_guest(base) as guest:
        keys = frozenset(
            fields[1]
            for path in guest.glob(_HOST_KEY_GLOB)
            if len(fields := guest.read_text(path).split()) > 1
        )
        return BaseFacts(keys, login_users(guest), guest.is_file(CLOUD_INIT_PROGRAM))


def ssh_login_check(
    endpoint: instances.SshEndpoint,
    identity: Path,
    users: tuple[str, ...],
    hostname: str,
    running: Callable[[], bool],
    deadline: float,
) -> tuple[bool, str]:
    """Log in through the forwarded port with the run's key and read ``/etc/hostname``."""
    seen, detail = instances.wait_for_ssh(endpoint, running, deadline)
    if not seen:
        return False, detail
    refusals: list[str] = []
    for user in users:
        argv = ssh_argv(
            endpoint.port, user, endpoint.known_hosts, identity=identity,
            command=["sync", "&&", "cat", "/etc/hostname"], batch=True,
        )  # fmt: skip
        result = run_remote(argv, timeout=SSH_LOGIN_TIMEOUT)
        if result.returncode != 0:
            said = next((line for line in reversed(result.stderr_text.splitlines()) if line.strip()), "")
            said = said or next((line for line in result.stdout_text.splitlines() if line.strip()), "")
            refusals.append(f"{user}: exit {result.returncode} ({said.strip()[:80] or 'no message'})")
            continue
        text = result.stdout_text.strip()
        ok = text in (hostname, hostname.split(".", maxsplit=1)[0])
        return ok, f"{user}@127.0.0.1:{endpoint.port} with the given key; /etc/hostname is {text[:64]!r}"
    return False, f"no login with the given key: {'; '.join(refusals)}"


def _console_head(log: Path) -> str:
    """The start of the console log: the firmware's and the kernel's first words are there."""
    try:
        with open(log, "rb") as handle:
            return handle.read(_CONSOLE_HEAD).decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def firmware_check(console_text: str, chosen: FirmwareChoice) -> tuple[bool, str]:
    """Does what the console says about the firmware agree with the firmware started?"""
    facts = FirmwareFacts.of(console_text)
    if facts.refusals:
        return False, f"OVMF refused {facts.refusals[0]}"
    if chosen.firmware == "bios":
        if facts.kernel_efi is not None:
            return False, f"SeaBIOS was started but the kernel found UEFI firmware ({facts.kernel_efi})"
        return True, "SeaBIOS; the kernel found no UEFI firmware"
    if facts.kernel_efi is None:
        return True, "OVMF; the console does not say what the kernel found (a quiet kernel)"
    said = f"OVMF; the kernel found UEFI firmware ({facts.kernel_efi})"
    if chosen.secure_boot:
        if facts.kernel_secure_boot != "enabled":
            return False, f"{said} but Secure Boot {facts.kernel_secure_boot or 'not reported'}"
        return True, f"{said}, Secure Boot enabled"
    return True, said


def _read_bytes(guest: GuestFS, path: str) -> bytes | None:
    return guest.read_file(path) if guest.is_file(path) else None


def given_user_data_check(guest: GuestFS, instance_id: str, user_data: bytes) -> tuple[bool, str]:
    """The user's own user-data: the guest kept exactly these bytes for this instance and ran
    them without error (our agent's state, or cloud-init's; see the module docstring)."""
    state = instance_state_dir(instance_id)
    kept = _read_bytes(guest, f"{state}/user-data")
    if kept is not None:
        if kept != user_data:
            return (
                False,
                f"the agent kept other user-data ({len(kept)} bytes, not the {len(user_data)} given)",
            )
        status = (_read_bytes(guest, f"{state}/user-data.status") or b"").decode("ascii", "replace").strip()
        if status != "0":
            return False, f"the agent ran it; exit status {status or 'not recorded'}"
        return True, f"the agent ran the {len(user_data)} bytes given (exit status 0)"
    cloud_init = _read_bytes(guest, f"{CLOUD_INIT_INSTANCES}/{instance_id}/user-data.txt")
    if cloud_init is not None:
        if cloud_init != user_data:
            return False, f"cloud-init kept other user-data ({len(cloud_init)} bytes, not {len(user_data)})"
        result = _read_bytes(guest, CLOUD_INIT_RESULT)
        try:
            errors = json.loads(result or b"{}").get("v1", {}).get("errors", [])
        except (ValueError, AttributeError):
            return False, f"{CLOUD_INIT_RESULT} is not cloud-init's JSON"
        if result is None:
            return False, f"cloud-init kept the user-data but did not finish ({CLOUD_INIT_RESULT} is missing)"
        if errors:
            return False, f"cloud-init reports {len(errors)} error(s): {str(errors[0])[:120]}"
        return True, f"cloud-init took the {len(user_data)} bytes given and reports no error"
    if not user_data.startswith(b"#!") and guest.is_dir(state):
        return False, "the agent runs only scripts (#!); this user-data is not one"
    return False, f"neither {state}/user-data nor cloud-init's copy exists: the user-data did not arrive"


def _filesystem_size(report: ImageReport, partition: int | None) -> int | None:
    if partition is None:
        return report.filesystem.size_bytes if report.filesystem is not None else None
    table = report.partition_table
    for part in table.partitions if table is not None else ():
        if part.number == partition and part.filesystem is not None:
            return part.filesystem.size_bytes
    return None


def root_growth_check(
    flat: Path, report: ImageReport, base_report: ImageReport, grown: bool
) -> tuple[bool, str]:
    """The root partition reaches the end of the disk and its filesystem fills it (and, when
    the disk was made bigger than the image, the filesystem is bigger than the image's)."""
    disk = flat.stat().st_size
    region = choose_region(layout_of(report, flat), flat, None)
    after, before = (
        _filesystem_size(report, region.partition),
        _filesystem_size(base_report, region.partition),
    )
    if after is None:
        return False, f"the size of {region.describe()} is unknown"
    room = disk - (region.offset + region.size)
    sizes = f"{format_size(before) if before is not None else '?'} -> {format_size(after)}"
    detail = (
        f"{region.describe()}: filesystem {sizes}, partition ends {format_size(room)} before the disk's end"
    )
    if room > GROWTH_SLACK:
        table = report.partition_table
        after_root = [
            part.number
            for part in (table.partitions if table is not None else ())
            if part.kind != "extended" and table is not None and table.byte_offset(part) > region.offset
        ]
        if after_root:
            return False, f"{detail} (partition {after_root[0]} follows it: the root cannot grow)"
        return False, f"{detail} (not grown to the {format_size(disk)} disk)"
    if after < region.size - GROWTH_SLACK:
        return False, f"{detail} (the filesystem does not fill its {format_size(region.size)} partition)"
    if grown and before is not None and after <= before:
        return False, f"{detail} (no bigger than in the image)"
    return True, detail


@dataclass(frozen=True)
class _Run:
    """What one verify run made for its instance (the checks compare against it)."""

    started: float
    deadline: float
    token: str
    key_line: str
    #: The private key of the run's fresh pair (the instance got its public half).
    identity: Path
    #: The host port forwarded to the guest's port 22.
    ssh_port: int
    user_data: bytes | None


def verify_image(
    site: instances.Site,
    image_ref: str,
    *,
    context: str = "nocloud",
    tokens: str = "optional",
    timeout: float = 300.0,
    keep: bool = False,
    accelerator: Any = None,
    user_data: bytes | None = None,
    disk_size: int | None = None,
    firmware: str | None = None,
    secure_boot: bool = False,
    cpus: int | None = None,
) -> VerifyReport:
    """Boot ``image_ref`` once with a fresh identity and check the result (module docstring).

    ``user_data``: the user's own (else a marker script of this run); ``disk_size``: the
    instance's disk (else the image's plus ``DISK_GROWTH``); ``firmware``/``secure_boot``:
    override the firmware the image asks for; ``cpus``: the vCPUs (else
    ``compute.instance.default_cpus``: two under TCG for a guest that boots systemd).
    """
    if timeout <= 0:
        raise InvalidArgumentError("A verify time limit must be a positive number of seconds.")
    token = secrets.token_hex(4)
    hostname = f"verify-{token}"
    report = VerifyReport(image_ref, hostname=hostname, context=context)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="imagewright-verify-") as scratch:
        identity = Path(scratch) / "id_ed25519"
        public = ssh_keygen.generate_ed25519(identity, f"imagewright-verify-{token}")
        key = read_ssh_key_file(public)[0]
        # a port to the guest's SSH server, used if the image has one (known once it is resolved)
        ssh_port = instances.free_host_port()
        launched = instances.launch(
            site,
            instances.LaunchRequest(
                image_ref=image_ref,
                name=hostname,
                hostname=hostname,
                keys=[("verify", key)],
                user_data=user_data if user_data is not None else user_data_script(token),
                context=context,
                tokens=tokens,
                accelerator=accelerator,
                firmware=firmware,
                secure_boot=secure_boot,
                cpus=cpus,
                disk_size=disk_size,
                disk_growth=DISK_GROWTH,
                port_forwards=((ssh_port, instances.SSH_PORT),),
            ),
        )
        report.instance_id, report.accelerator = launched.instance_id, launched.accelerator
        report.cpus, report.cpus_reason = launched.cpus, launched.cpus_reason
        report.firmware, report.secure_boot = launched.firmware.firmware, launched.firmware.secure_boot
        report.firmware_reason, report.disk_size = launched.firmware.reason, launched.disk_size
        run = _Run(started, started + timeout, token, key.line, identity, ssh_port, user_data)
        try:
            _check_instance(site, launched, report, run)
        finally:
            if not keep:
                instances.remove(site, launched.instance_id, force=True)
            report.total_seconds = time.monotonic() - started
    return report


def _check_instance(
    site: instances.Site,
    launched: instances.LaunchedInstance,
    report: VerifyReport,
    run: _Run,
) -> None:
    """The checks of a launched instance, in the order of the module docstring."""
    from imagewright.guest.session import open_guest

    files: InstanceFiles = launched.files
    hostname = report.hostname
    log, running = instances.console_path(site, launched.instance_id)
    seen, detail = instances.wait_for_console(log, launched.instance_id, running, run.deadline)
    report.checks.append(Check("console", seen, time.monotonic() - run.started, detail))
    console_text = _console_head(log)
    report.checks.append(_timed("firmware", lambda: firmware_check(console_text, launched.firmware)))
    base = _base_facts(launched.base.path)
    if seen and base.cloud_init and detail == "login prompt":
        report.checks.append(
            _timed("cloud-init", lambda: instances.wait_for_cloud_init(log, running, run.deadline))
        )
    if seen and base.login_users:
        endpoint = instances.SshEndpoint(launched.instance_id, run.ssh_port, files.known_hosts)
        report.checks.append(
            _timed(
                "ssh login",
                lambda: ssh_login_check(
                    endpoint, run.identity, base.login_users, hostname, running, run.deadline
                ),
            )
        )
    stop_started = time.monotonic()
    # Our agent syncs before its ready line: nothing it wrote is only in the guest's page
    # cache, so QEMU may quit at once. A login prompt (cloud-init, systemd) gets an ACPI
    # power-off and ACPI_GRACE seconds to shut down cleanly first.
    agent_ready = seen and detail.startswith("agent ready")
    outcome = instances.stop(site, launched.instance_id, grace=0.0 if agent_ready else ACPI_GRACE)
    report.checks.append(Check("stop", True, time.monotonic() - stop_started, outcome.how))
    flat = files.directory / "disk-read-back.raw"
    try:
        read_started = time.monotonic()
        qemu_img.flatten_overlay(files.overlay, launched.base.path, launched.base.format, flat)
        flat_report = inspect_image(str(flat))
        with open_guest(flat, format="raw", report=flat_report) as guest:
            opened = time.monotonic() - read_started

            def hostname_check() -> tuple[bool, str]:
                text = guest.read_text("/etc/hostname").strip() if guest.is_file("/etc/hostname") else ""
                short = hostname.split(".", maxsplit=1)[0]
                return text in (hostname, short), f"/etc/hostname is {text[:64]!r}"

            def marker_check() -> tuple[bool, str]:
                if run.user_data is not None:
                    return given_user_data_check(guest, launched.instance_id, run.user_data)
                if not guest.is_file(MARKER_PATH):
                    return False, f"{MARKER_PATH} is missing: the user-data did not run"
                lines = guest.read_text(MARKER_PATH).split()
                runs = lines.count(run.token)
                return runs == 1 and len(lines) == 1, f"ran {runs} time(s)"

            checks = [
                _timed("hostname", hostname_check),
                _timed("ssh key", lambda: _authorized(guest, run.key_line)),
                _timed("user-data", marker_check),
            ]
        base_report = inspect_image(str(launched.base.path))
        grown = launched.disk_size > launched.base.virtual_size
        checks.append(
            _timed("root filesystem", lambda: root_growth_check(flat, flat_report, base_report, grown))
        )
        with open_guest(flat, format="raw", report=flat_report) as guest:
            checks.append(_timed("ssh host keys", lambda: _host_keys(guest, set(base.host_keys))))
        # the read-back (flatten + open) is shared by the checks: charge it to the first
        first = checks[0]
        checks[0] = Check(first.name, first.ok, first.seconds + opened, first.detail)
        report.checks += checks
    finally:
        flat.unlink(missing_ok=True)
