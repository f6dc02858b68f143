"""The lifecycle of instances under QEMU: run, list, stop, remove, console.

Every instance is a record in the catalog (``catalog.instances``: what the metadata service
tells it) plus a run record (``catalog.instance_runs``: where and how it runs) plus its
directory (``compute.instance.InstanceFiles``). ``launch`` makes all three, starts the
supervisor and returns once QEMU runs (or raises with QEMU's own error, leaving nothing
behind). ``statuses`` is what ``ps`` prints: the catalog's state checked against the live
process, and the orphans (QEMU processes named as instances that the catalog does not know
as running). ``stop`` goes through QMP; ``remove`` leaves no process, no file and no record.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagewright.agent import find_ready_line
from imagewright.catalog import accounts, instance_runs, instances
from imagewright.catalog.database import Catalog
from imagewright.catalog.models import InstanceRun
from imagewright.compute import qmp
from imagewright.compute.accel import AccelDecision, choose_accelerator
from imagewright.compute.instance import (
    InstanceFiles,
    default_cpus,
    instance_machine,
    instance_process_alive,
    process_name,
    running_instance_processes,
)
from imagewright.errors import ImagewrightError, InstanceError, InvalidArgumentError
from imagewright.metadata.channel import MetadataChannel
from imagewright.metadata.context import CONTEXT_KINDS, build_context_medium
from imagewright.metadata.instance import SshPublicKey
from imagewright.programs import qemu_img
from imagewright.programs.ovmf import OvmfFirmware, find_ovmf
from imagewright.programs.qemu_system import (
    METADATA_ADDRESS,
    BackingImage,
    Drive,
    GuestForward,
    HostForward,
    NetworkSpec,
    UefiFlash,
    machine_sandbox,
    qemu_system_argv,
)
from imagewright.programs.runner import start_imagewright_process
from imagewright.service.datadir import database_url_for, read_config
from imagewright.service.launch.firmware import FirmwareChoice, choose_firmware
from imagewright.service.launch.images import (
    BaseImage,
    base_from_file,
    base_from_registry,
    boots_systemd,
    is_file_reference,
)
from imagewright.service.launch.supervisor import write_plan
from imagewright.stores.storeset import open_stores
from imagewright.units import format_size

INSTANCES_DIRECTORY = "instances"
#: The project of instances the operator runs without ``--project``.
ADMIN_PROJECT = "admin"
CONTEXTS: tuple[str, ...] = ("metadata", *CONTEXT_KINDS)
#: How long QEMU may take to start (supervisor start-up, bwrap, QEMU opening its disks).
START_TIMEOUT = 60.0
#: After ``quit`` or a power-off, how long QEMU may take to end and the supervisor to record it.
END_TIMEOUT = 30.0
SUPERVISOR_MODULE = "imagewright.service.launch.supervisor"


@dataclass(frozen=True)
class Site:
    """Where instances live: a data dir, and its catalog (the data dir's, or ``--database``)."""

    data_dir: Path
    database: str | None = None

    @property
    def database_url(self) -> str:
        return database_url_for(self.data_dir, self.database)

    @property
    def instances_root(self) -> Path:
        return self.data_dir / INSTANCES_DIRECTORY

    def files(self, instance_id: str) -> InstanceFiles:
        instances.validate_instance_id(instance_id)
        return InstanceFiles.under(self.instances_root, instance_id)

    def channel(self) -> MetadataChannel:
        return MetadataChannel.for_data_dir(self.data_dir)

    @contextlib.contextmanager
    def catalog(self) -> Iterator[Catalog]:
        if not self.data_dir.is_dir():
            raise InvalidArgumentError(
                f"There is no data dir {self.data_dir}; "
                f"start 'imagewright serve --data-dir {self.data_dir}' once."
            )
        catalog = Catalog(self.database_url)
        try:
            yield catalog
        finally:
            catalog.dispose()


@dataclass(frozen=True)
class LaunchRequest:
    image_ref: str
    name: str | None = None
    hostname: str | None = None
    keys: Sequence[tuple[str, SshPublicKey]] = ()
    user_data: bytes | None = None
    context: str = "metadata"
    tokens: str = "optional"
    #: None: ``compute.instance.default_cpus`` (two under TCG for a systemd guest, else one).
    cpus: int | None = None
    memory_mib: int = 512
    port_forwards: Sequence[tuple[int, int]] = ()
    #: The project that owns the instance (``--project``, an admin launching for another
    #: project): a registry image must then be one that project sees, as ``instance create``
    #: and the compute API resolve it. None: the admin project, any image (the operator).
    project: str | None = None
    accelerator: AccelDecision | None = None
    #: "bios" or "uefi" (``--firmware``); None: from the image (``firmware.choose_firmware``).
    firmware: str | None = None
    secure_boot: bool = False
    #: The instance's disk size in bytes (its overlay), at least the image's; None: the
    #: image's plus ``disk_growth``.
    disk_size: int | None = None
    disk_growth: int = 0


@dataclass(frozen=True)
class LaunchedInstance:
    instance_id: str
    name: str
    hostname: str
    files: InstanceFiles
    base: BaseImage
    accelerator: str
    accelerator_reason: str
    context: str
    started_in: float
    firmware: FirmwareChoice
    #: Bytes: the instance's disk (its overlay's virtual size).
    disk_size: int
    #: The vCPUs it runs with (``--cpus``, else ``default_cpus``), and why.
    cpus: int = 1
    cpus_reason: str = "--cpus"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.instance_id,
            "name": self.name,
            "hostname": self.hostname,
            "image_id": self.base.image_id,
            "image": str(self.base.path),
            "image_format": self.base.format,
            "image_downloaded": self.base.downloaded,
            "directory": str(self.files.directory),
            "console_log": str(self.files.console_log),
            "accelerator": self.accelerator,
            "accelerator_reason": self.accelerator_reason,
            "context": self.context,
            "firmware": self.firmware.firmware,
            "secure_boot": self.firmware.secure_boot,
            "firmware_reason": self.firmware.reason,
            "disk_size": self.disk_size,
            "cpus": self.cpus,
            "cpus_reason": self.cpus_reason,
            "start_seconds": round(self.started_in, 3),
        }


def resolve_base(
    site: Site, catalog: Catalog, ref: str, progress: Any = None, project_id: str | None = None
) -> BaseImage:
    """The base image ``ref`` names: a file, or a registry image visible to ``project_id``
    (every image when None)."""
    if is_file_reference(ref):
        return base_from_file(Path(ref))
    config = read_config(site.data_dir)
    stores = open_stores(config.store_specs if config else (), site.data_dir)
    return base_from_registry(catalog, stores, site.data_dir, ref, project_id, progress=progress)


def _network(
    site: Site, instance_id: str, context: str, mac: str, port_forwards: Sequence[tuple[int, int]]
) -> NetworkSpec:
    hostfwd = tuple(HostForward(host, guest) for host, guest in port_forwards)
    if context != "metadata":
        return NetworkSpec(mode="user", restrict=True, host_forwards=hostfwd, mac=mac)
    spec = site.channel().forwarder(instance_id)
    forward = GuestForward(METADATA_ADDRESS, 80, spec.command, reads=spec.reads, writes=spec.writes)
    return NetworkSpec(
        mode="user", link_local=True, restrict=True, guest_forwards=(forward,), host_forwards=hostfwd, mac=mac
    )


def ec2_smbios(instance_id: str) -> dict[str, str]:
    """SMBIOS system fields under which cloud-init's ds-identify takes the machine for EC2."""
    digits = (instance_id.removeprefix("i-") + "0" * 29)[:29]
    uuid = f"ec2{digits[:5]}-{digits[5:9]}-{digits[9:13]}-{digits[13:17]}-{digits[17:29]}"
    return {"manufacturer": "Amazon EC2", "product": "imagewright", "serial": uuid, "uuid": uuid}


def _check_request(site: Site, request: LaunchRequest) -> None:
    if request.context not in CONTEXTS:
        raise InvalidArgumentError(f"'{request.context}' is not a context; use one of {', '.join(CONTEXTS)}.")
    if request.context == "metadata" and not site.channel().socket_path.exists():
        raise InstanceError(
            f"No metadata service listens on {site.channel().socket_path}; start "
            f"'imagewright serve --data-dir {site.data_dir} --metadata-listen HOST:PORT' "
            "(or give a context medium with --context)."
        )
    if request.disk_size is not None and request.disk_size <= 0:
        raise InvalidArgumentError("A disk size must be a positive number of bytes.")
    for host, guest in request.port_forwards:
        if not (1 <= host <= 65535 and 1 <= guest <= 65535):
            raise InvalidArgumentError(f"The port forward {host}:{guest} names a port outside 1-65535.")


def disk_size(request: LaunchRequest, base: BaseImage) -> int:
    """The instance's disk: the image's size, or the bigger size asked for (never smaller: the
    guest's partitions and filesystems end where the image ends)."""
    if request.disk_size is None:
        return base.virtual_size + request.disk_growth
    if request.disk_size < base.virtual_size:
        raise InvalidArgumentError(
            f"The disk size {format_size(request.disk_size)} is smaller than the image's "
            f"{format_size(base.virtual_size)}; an instance's disk can only be bigger."
        )
    return request.disk_size


def launch(site: Site, request: LaunchRequest, *, progress: Any = None) -> LaunchedInstance:
    """Start an instance of ``request.image_ref``; returns once its QEMU runs."""
    _check_request(site, request)
    started = time.monotonic()
    with site.catalog() as catalog:
        with catalog.reading() as session:
            project_id = accounts.find_project(session, request.project or ADMIN_PROJECT).id
        scope = project_id if request.project is not None else None
        base = resolve_base(site, catalog, request.image_ref, progress, scope)
        size = disk_size(request, base)
        firmware = choose_firmware(
            base.boots_under, base.needed_firmware, base.properties,
            firmware=request.firmware, secure_boot=request.secure_boot,
        )  # fmt: skip
        ovmf = find_ovmf(secure_boot=firmware.secure_boot) if firmware.firmware == "uefi" else None
        name = request.name or f"vm-{secrets.token_hex(3)}"
        with catalog.writing() as session:
            spec = instances.InstanceSpec.build(
                name=name,
                image_id=base.image_id,
                hostname=request.hostname,
                keys=request.keys,
                user_data=request.user_data,
                http_tokens=request.tokens,
            )
            created = instances.create_instance(session, spec, project_id)
            description = instances.served_instance(created, "local").description
            instance_id, hostname = created.id, created.hostname
            mac = created.interfaces[0].mac
        try:
            files = site.files(instance_id)
            decision, (cpus, cpus_reason) = _start(
                site, catalog, request, base, instance_id, description, mac, files, firmware, ovmf
            )
        except BaseException:
            _discard(site, catalog, instance_id)
            raise
    return LaunchedInstance(
        instance_id, name, hostname, files, base, decision.accelerator, decision.reason, request.context,
        time.monotonic() - started, firmware, size, cpus, cpus_reason,
    )  # fmt: skip


def _start(
    site: Site,
    catalog: Catalog,
    request: LaunchRequest,
    base: BaseImage,
    instance_id: str,
    description: Any,
    mac: str,
    files: InstanceFiles,
    firmware: FirmwareChoice,
    ovmf: OvmfFirmware | None,
) -> tuple[AccelDecision, tuple[int, str]]:
    try:
        files.create()
    except OSError as err:
        raise InstanceError(
            f"The instance directory {files.directory} cannot be created: {err.strerror}."
        ) from None
    qemu_img.create(files.overlay, "qcow2", disk_size(request, base))
    extra: tuple[Drive, ...] = ()
    if request.context != "metadata":
        medium = files.medium(request.context)
        build_context_medium(request.context, description, medium)
        if request.context == "wakame":
            extra = (Drive(medium, format="raw", bus="virtio", readonly=True),)
        else:
            extra = (Drive(medium, format="raw", bus="ide", media="cdrom"),)
    decision = request.accelerator or choose_accelerator()
    if request.cpus is not None:
        cpus, cpus_reason = request.cpus, "--cpus"
    else:
        systemd = decision.accelerator == "tcg" and boots_systemd(base)
        cpus, cpus_reason = default_cpus(decision.accelerator, systemd=systemd)
    # cloud-init uses its EC2 datasource only on a machine that looks like EC2 (ENVIRONMENT.md):
    # SMBIOS manufacturer "Amazon EC2", serial and uuid equal and starting with "ec2".
    smbios = ec2_smbios(instance_id) if request.context == "metadata" else None
    uefi: UefiFlash | None = None
    if ovmf is not None:
        # the instance's own variable store, kept with it: what the guest writes there
        # (boot entries) stays for its next start, as a cloud keeps an instance's NVRAM
        shutil.copyfile(ovmf.variables_template, files.uefi_variables)
        # q35: its AHCI CD-ROM is seen under OVMF, PIIX's IDE is not (programs/qemu_system.py)
        uefi = UefiFlash(ovmf.code, files.uefi_variables, firmware.secure_boot, chipset="q35")
    machine = instance_machine(
        instance_id,
        files,
        BackingImage(base.path, base.format),
        accelerator=decision,
        network=_network(site, instance_id, request.context, mac, request.port_forwards),
        extra_drives=extra,
        cpus=cpus,
        memory_mib=request.memory_mib,
        smbios_system=smbios,
        uefi=uefi,
    )
    argv = qemu_system_argv(machine)
    write_plan(
        files.plan,
        instance_id=instance_id,
        database_url=site.database_url,
        argv=argv,
        sandbox=machine_sandbox(machine),
        qemu_log=files.qemu_log,
        console_log=files.console_log,
    )
    with catalog.writing() as session:
        instance_runs.record_start(
            session,
            instance_runs.RunStart(
                instance_id=instance_id,
                host=socket.gethostname(),
                accelerator=decision.accelerator,
                accelerator_reason=decision.reason,
                directory=str(files.directory),
                base_path=str(base.path),
                base_format=base.format,
                context=request.context,
                port_forwards=tuple(request.port_forwards),
                cpus=cpus,
                memory_mib=request.memory_mib,
                firmware=firmware.firmware,
                secure_boot=firmware.secure_boot,
                firmware_reason=firmware.reason,
            ),
        )
    supervisor = start_imagewright_process(SUPERVISOR_MODULE, [str(files.plan)], log=files.supervisor_log)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        with catalog.reading() as session:
            run = instance_runs.get_run(session, instance_id)
            state, message = run.state, run.message
        if state == "running":
            return decision, (cpus, cpus_reason)
        if state == "failed":
            raise InstanceError(message or "QEMU could not start the instance.")
        if state == "stopped":
            raise InstanceError("QEMU ended as soon as it started; see its console log.")
        if supervisor.poll() is not None:
            raise InstanceError(f"The instance's supervisor ended at once; see {files.supervisor_log}.")
        if time.monotonic() > deadline:
            raise InstanceError(f"QEMU did not start within {START_TIMEOUT:g} s.")
        time.sleep(0.1)


def _discard(site: Site, catalog: Catalog, instance_id: str) -> None:
    """Undo a launch that failed midway: no process, no file, no record is left."""
    with contextlib.suppress(ImagewrightError, OSError):
        _end_processes(site, catalog, instance_id, force=True, grace=0)
    with contextlib.suppress(ImagewrightError, OSError):
        _forget(site, catalog, instance_id)


# --- ps ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstanceStatus:
    instance_id: str
    name: str
    image_id: str
    #: ``running``, ``starting``, ``stopped``, ``failed``, ``lost`` (the catalog says running,
    #: no such process lives), ``created`` (a record that was never run), ``elsewhere`` (on another host).
    state: str
    accelerator: str | None = None
    qemu_pid: int | None = None
    context: str | None = None
    exit_status: int | None = None
    message: str | None = None
    console_log: str | None = None
    port_forwards: list[tuple[int, int]] = field(default_factory=list)
    firmware: str | None = None
    secure_boot: bool = False
    firmware_reason: str | None = None
    cpus: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.instance_id,
            "name": self.name,
            "image_id": self.image_id,
            "state": self.state,
            "accelerator": self.accelerator,
            "qemu_pid": self.qemu_pid,
            "context": self.context,
            "exit_status": self.exit_status,
            "message": self.message,
            "console_log": self.console_log,
            "port_forwards": [list(pair) for pair in self.port_forwards],
            "firmware": self.firmware,
            "secure_boot": self.secure_boot,
            "firmware_reason": self.firmware_reason,
            "cpus": self.cpus,
        }


@dataclass(frozen=True)
class Orphan:
    """A QEMU process named as an instance's that the catalog does not know as running."""

    instance_id: str
    pids: tuple[int, ...]
    #: The catalog has this instance (but not running under these pids).
    known: bool

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.instance_id, "pids": list(self.pids), "known": self.known}


def _live_state(run: InstanceRun) -> str:
    if run.host != socket.gethostname():
        return "elsewhere" if run.state in ("starting", "running") else run.state
    if run.state == "running":
        return "running" if instance_process_alive(run.qemu_pid, run.instance_id) else "lost"
    if run.state == "starting":
        alive = run.supervisor_pid is None or _pid_alive(run.supervisor_pid)
        return "starting" if alive else "lost"
    return run.state


def _pid_alive(pid: int) -> bool:
    """Process ``pid`` lives (a zombie does not: a supervisor this process started and has not
    reaped yet, as in ``verify``, is reaped here)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read(4096).rpartition(b")")[2].split()[:1]
    except OSError:
        return False
    return state != [b"Z"]


def statuses(site: Site) -> tuple[list[InstanceStatus], list[Orphan]]:
    """Every instance of the catalog with its live state, and the orphaned QEMU processes."""
    with site.catalog() as catalog, catalog.reading() as session:
        rows = instances.list_instances(session, None)
        runs = {run.instance_id: run for run in instance_runs.list_runs(session)}
        result: list[InstanceStatus] = []
        for row in rows:
            run = runs.get(row.id)
            if run is None:
                result.append(InstanceStatus(row.id, row.name, row.image_id, "created"))
                continue
            result.append(
                InstanceStatus(
                    row.id, row.name, row.image_id, _live_state(run),
                    accelerator=run.accelerator, qemu_pid=run.qemu_pid, context=run.context,
                    exit_status=run.exit_status, message=run.message,
                    console_log=str(InstanceFiles(Path(run.directory)).console_log),
                    port_forwards=instance_runs.port_forwards(run),
                    firmware=run.firmware, secure_boot=run.secure_boot, firmware_reason=run.firmware_reason,
                    cpus=run.cpus,
                )
            )  # fmt: skip
    running = {s.instance_id: s.qemu_pid for s in result if s.state == "running"}
    known = {s.instance_id for s in result}
    orphans = [
        Orphan(instance_id, tuple(sorted(pids)), instance_id in known)
        for instance_id, pids in sorted(running_instance_processes(site.instances_root).items())
        if any(pid != running.get(instance_id) for pid in pids)
    ]
    return result, orphans


# --- stop and rm ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StopOutcome:
    instance_id: str
    #: ``powered off`` (the guest obeyed ACPI), ``quit`` (QEMU was told to end), ``killed``
    #: (it answered nothing; SIGKILL), ``not running``.
    how: str


def _end_processes(site: Site, catalog: Catalog, instance_id: str, *, force: bool, grace: float) -> str:
    with catalog.reading() as session:
        run = instance_runs.find_run(session, instance_id)
        if run is None:
            return "not running"
        qemu_pid, supervisor_pid, directory = run.qemu_pid, run.supervisor_pid, Path(run.directory)
    files = InstanceFiles(directory)
    pids = set(running_instance_processes(site.instances_root).get(instance_id, []))
    if qemu_pid is not None and instance_process_alive(qemu_pid, instance_id):
        pids.add(qemu_pid)

    def gone() -> bool:
        return not any(instance_process_alive(pid, instance_id) for pid in pids)

    how = "not running"
    if pids and not gone():
        try:
            how = qmp.shut_down(
                files.qmp_socket, process_name(instance_id), grace=0 if force else grace, gone=gone
            )
        except qmp.InstanceControlError:
            if not force:
                raise
            how = "killed"
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
        deadline = time.monotonic() + END_TIMEOUT
        while not gone():
            if time.monotonic() > deadline:
                if not force:
                    raise InstanceError(
                        f"QEMU of {instance_id} did not end within {END_TIMEOUT:g} s of '{how}'."
                    )
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, 9)
                how = "killed"
                deadline = time.monotonic() + END_TIMEOUT
            time.sleep(0.1)
    # The supervisor records the end; wait for it briefly, then record it ourselves.
    deadline = time.monotonic() + END_TIMEOUT
    while supervisor_pid is not None and _pid_alive(supervisor_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with catalog.writing() as session:
        instance_runs.mark_ended(
            session, instance_id, "stopped", exit_status=None, message=f"stopped ({how})"
        )
    return how


def stop(site: Site, instance_id: str, *, force: bool = False, grace: float = 30.0) -> StopOutcome:
    """Stop a running instance: ACPI power-off, up to ``grace`` s, then QMP ``quit`` (``force``: at once)."""
    with site.catalog() as catalog:
        with catalog.reading() as session:
            instances.get_instance(session, instance_id)
        return StopOutcome(instance_id, _end_processes(site, catalog, instance_id, force=force, grace=grace))


def _forget(site: Site, catalog: Catalog, instance_id: str) -> None:
    with catalog.writing() as session:
        run = instance_runs.find_run(session, instance_id)
        directory = Path(run.directory) if run is not None else site.files(instance_id).directory
        instance_runs.delete_run(session, instance_id)
        row = instances.find_instance(session, instance_id)
        if row is not None:
            instances.delete_instance(session, row)
    if directory.exists():
        shutil.rmtree(directory)
    site.channel().remove_forwarder(instance_id)


def remove(site: Site, instance_id: str, *, force: bool = False) -> StopOutcome:
    """Remove an instance: its record, its run, its directory (overlay, logs) and forwarder.

    A running instance is refused unless ``force`` (then it is stopped at once first).
    """
    with site.catalog() as catalog:
        with catalog.reading() as session:
            known = instances.find_instance(session, instance_id) is not None
            run = instance_runs.find_run(session, instance_id)
            state = _live_state(run) if run is not None else "created"
        if not known:
            return _remove_orphan(site, instance_id, force=force)
        alive = state in ("running", "starting") or bool(
            running_instance_processes(site.instances_root).get(instance_id)
        )
        if alive and not force:
            raise InstanceError(f"The instance {instance_id} is running; stop it first, or use --force.")
        how = _end_processes(site, catalog, instance_id, force=True, grace=0) if alive else "not running"
        _forget(site, catalog, instance_id)
    return StopOutcome(instance_id, how)


def _remove_orphan(site: Site, instance_id: str, *, force: bool) -> StopOutcome:
    """An id the catalog does not know: its orphaned QEMU (with ``force``) and its leftovers."""
    pids = running_instance_processes(site.instances_root).get(instance_id, [])
    directory = site.files(instance_id).directory
    if not pids and not directory.exists():
        raise instances.instance_not_found(instance_id)
    if pids and not force:
        raise InstanceError(
            f"The instance {instance_id} is not in the catalog but its QEMU runs (pid "
            f"{', '.join(map(str, pids))}); use --force to end it."
        )
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    deadline = time.monotonic() + END_TIMEOUT
    while any(instance_process_alive(pid, instance_id) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    if directory.exists():
        shutil.rmtree(directory)
    site.channel().remove_forwarder(instance_id)
    return StopOutcome(instance_id, "killed" if pids else "not running")


# --- console -------------------------------------------------------------------------------------

#: A getty's prompt ("debian login: ") at the end of a console line.
LOGIN_PROMPT = re.compile(r"(?m)\blogin: *\r?$")


def _console_tail(log: Path) -> str:
    """The last MiB of the console log (what a wait looks for is near its end), or ""."""
    try:
        with open(log, "rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - (1 << 20)))
            return handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def wait_for_console(
    log: Path, instance_id: str, running: Callable[[], bool], deadline: float, *, want: str = "ready"
) -> tuple[bool, str]:
    """(seen, detail): the console shows our agent's ready line for ``instance_id`` (``want``
    ``ready``: or a login prompt, for images without our agent) or a login prompt (``login``)."""
    while True:
        text = _console_tail(log)
        ready = find_ready_line(text) if want == "ready" else None
        if ready is not None and ready.instance_id == instance_id:
            return True, f"agent ready (source {ready.source}, hostname {ready.hostname})"
        if ready is not None:
            return False, f"the agent became another instance ({ready.instance_id})"
        if LOGIN_PROMPT.search(text):
            return True, "login prompt"
        if not running():
            return False, "QEMU ended before the guest was ready"
        if time.monotonic() > deadline:
            last = next((line for line in reversed(text.splitlines()) if line.strip()), "")
            return False, f"not ready in time; last console line: {last.strip()[:120] or '(silent)'}"
        time.sleep(0.5)


#: cloud-init's final message (its ``final_message`` module, written to the console at the end
#: of the final stage, after the user's scripts ran): "Cloud-init v. 22.4.2 finished at <date>.
#: Datasource DataSourceEc2Local.  Up 53.12 seconds".
CLOUD_INIT_FINISHED = re.compile(r"Cloud-init v\. (\S+) finished at [^\n]*?Datasource (\w+)")


def wait_for_cloud_init(log: Path, running: Callable[[], bool], deadline: float) -> tuple[bool, str]:
    """(seen, detail): the console shows cloud-init's final message (its last stage is done)."""
    while True:
        text = _console_tail(log)
        finished = CLOUD_INIT_FINISHED.search(text)
        if finished is not None:
            return True, f"cloud-init {finished.group(1)} finished (datasource {finished.group(2)})"
        if not running():
            return False, "QEMU ended before cloud-init finished"
        if time.monotonic() > deadline:
            return False, "cloud-init did not finish in time (no final message on the console)"
        time.sleep(0.5)


def console_path(site: Site, instance_id: str) -> tuple[Path, Callable[[], bool]]:
    """The instance's console log, and a function telling whether its QEMU still runs."""
    with site.catalog() as catalog, catalog.reading() as session:
        instances.get_instance(session, instance_id)
        run = instance_runs.get_run(session, instance_id)
        files, pid = InstanceFiles(Path(run.directory)), run.qemu_pid

    def running() -> bool:
        return instance_process_alive(pid, instance_id)

    return files.console_log, running


def follow_console(
    log: Path,
    running: Callable[[], bool],
    write: Callable[[bytes], None],
    *,
    follow: bool,
    interval: float = 0.2,
) -> None:
    """Copy ``log`` to ``write``; with ``follow``, keep copying new bytes while QEMU runs."""
    try:
        handle = open(log, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise InstanceError(f"The instance has no console log yet ({log}).") from None
    with handle:
        while True:
            data = handle.read(1 << 16)
            if data:
                write(data)
                continue
            if not follow or not running():
                # one last read: QEMU may have written its last bytes as it ended
                rest = handle.read()
                if rest:
                    write(rest)
                return
            time.sleep(interval)


# --- ssh -----------------------------------------------------------------------------------------

SSH_PORT = 22
#: What an SSH server says first (RFC 4253, 4.2): "SSH-protoversion-softwareversion".
_SSH_BANNER = b"SSH-"


@dataclass(frozen=True)
class SshEndpoint:
    instance_id: str
    #: The host port on 127.0.0.1 forwarded to the guest's port 22.
    port: int
    known_hosts: Path


def free_host_port() -> int:
    """A TCP port on 127.0.0.1 free now (the kernel's pick), for a forward to a guest port.

    Another program may take it before QEMU binds it; QEMU then fails to start, said as such."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def ssh_endpoint(site: Site, instance_id: str) -> SshEndpoint:
    """Where to reach a running instance's SSH server: its forwarded port to guest port 22."""
    with site.catalog() as catalog, catalog.reading() as session:
        instances.get_instance(session, instance_id)
        run = instance_runs.get_run(session, instance_id)
        state, forwards, directory = _live_state(run), instance_runs.port_forwards(run), Path(run.directory)
    if state != "running":
        raise InstanceError(f"The instance {instance_id} is not running ({state}).")
    port = next((host for host, guest in forwards if guest == SSH_PORT), None)
    if port is None:
        raise InstanceError(
            f"The instance {instance_id} has no port forwarded to its port {SSH_PORT}; "
            f"run it with --port-forward HOSTPORT:{SSH_PORT}."
        )
    return SshEndpoint(instance_id, port, InstanceFiles(directory).known_hosts)


def ssh_banner(port: int, timeout: float = 5.0) -> str | None:
    """The first line an SSH server on 127.0.0.1:``port`` sends, or None (nothing listens,
    QEMU's forward finds no server in the guest yet and closes, or it says something else)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
            line = connection.makefile("rb").readline(256)
    except OSError:
        return None
    return line.decode("ascii", "replace").strip() if line.startswith(_SSH_BANNER) else None


def wait_for_ssh(endpoint: SshEndpoint, running: Callable[[], bool], deadline: float) -> tuple[bool, str]:
    """(seen, detail): an SSH server answers on the instance's forwarded port."""
    while True:
        banner = ssh_banner(endpoint.port)
        if banner is not None:
            return True, f"SSH server on 127.0.0.1:{endpoint.port} ({banner[:80]})"
        if not running():
            return False, "QEMU ended before an SSH server answered"
        if time.monotonic() > deadline:
            return False, f"no SSH server answered on 127.0.0.1:{endpoint.port} in time"
        time.sleep(1.0)
