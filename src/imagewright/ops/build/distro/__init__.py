"""``build --from debian:bookworm``: a cloud image from a distribution's own packages.

    from imagewright.ops.build.distro import build_distribution
    report = build_distribution("debian:bookworm", Path("disk.qcow2"), context="cloud-init")

The phases, each reported through ``progress(phase, done, total)``:

1. **plan** — the release (``release.py``), the apt sources (``sources.py``: a snapshot, a
   mirror, or this machine's own apt sources), the packages of every customisation that applies
   (``customizations/``) and the user's, and the mmdebstrap mode: ``unshare`` (an ordinary
   user's user namespace; for root, private mount/PID namespaces) unless root cannot unshare,
   then ``root``. Everything a user can get wrong is checked here, before the network is used.
2. **cache** — with the caches on and a disk to make, the root filesystem cache
   (``cache.RootfsCache``) is asked for a tarball with this build's key (its inputs, and the
   archive's current InRelease files): on a hit, step 3 is skipped and the cached tarball and
   package listing are used; on a miss, the tarball step 3 writes is stored there once the disk
   is built.
3. **fetch / unpack / configure / customize / pack** — one mmdebstrap run
   (``programs/mmdebstrap.py``) writes the root filesystem as a tarball into scratch space next
   to the output: apt downloads (into the local package cache, ``cache.py``), dpkg unpacks and
   configures inside mmdebstrap's private chroot (on tmpfs when memory allows, see
   ``_chroot_bytes`` and ``files.memory_scratch_directory``; if it fills the tmpfs, mmdebstrap
   runs again with the chroot on disk), the customisations' scripts run inside the
   target through ``--essential-hook``/``--customize-hook``, and the package manifest is read
   with the guest's own ``dpkg-query``. With ``SOURCE_DATE_EPOCH`` (the ``source_date_epoch``
   argument, the environment, or the snapshot's time) every mtime is clamped and the tarball's
   bytes repeat.
4. **image** — ``ops.build.build`` makes the bootable disk from the tarball as from any other
   (partitions, ``mke2fs -d``, fstab by UUID, grub.cfg, GRUB's boot code, and for UEFI the
   ESP with the guest's own signed shim and GRUB, copied from the tarball's root filesystem,
   so that its GRUB checks the kernel its distribution signed), by default a hybrid GPT disk
   that boots under BIOS and UEFI (``--firmware``/``--table`` as for any build). The guest
   has ``grub-pc``, and for a disk that boots under UEFI also ``grub-efi-amd64-signed`` and
   ``shim-signed`` (the boot-loader customisation), so no kernel hook is needed: the ESP's
   grub.cfg reads the root's ``/boot/grub/grub.cfg``, which the guest's update-grub keeps.
5. **prepare** — on the finished raw disk, before it is converted: prepare's ``agent``
   operation with ``--agent``.
6. The image and, beside it, ``IMAGE.packages`` (``name<TAB>version`` per installed package,
   sorted) appear together; a failure anywhere leaves neither, and no scratch file.

An output named ``*.tar`` (``.tar.gz``, ``.tar.xz``, ``.tar.zst``) gets the root filesystem
tarball itself instead of a disk (steps 2, 4 and 5 are skipped).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shlex
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagewright import __version__
from imagewright.errors import (
    BuildError,
    ImagewrightError,
    InvalidArgumentError,
    OutputExistsError,
    ProgramError,
    as_clause,
)
from imagewright.files import (
    AtomicOutput,
    ScratchFiles,
    default_cache_dir,
    memory_scratch_directory,
    write_file_atomically,
)
from imagewright.ops.build import BuildReport, build
from imagewright.ops.build.distro.cache import (
    PackageCache,
    RootfsCache,
    RootfsEntry,
    architecture,
    rootfs_key,
)
from imagewright.ops.build.distro.customizations import CUSTOMIZATIONS, Customization, TargetScript
from imagewright.ops.build.distro.plan import CONTEXTS, DistroPlan, FileToCopy
from imagewright.ops.build.distro.release import KERNEL_FLAVOURS, parse_release
from imagewright.ops.build.distro.sources import archive_state, check_keyring, choose_sources, parse_snapshot
from imagewright.ops.build.efiloader import LoaderChoice
from imagewright.ops.build.layout import DEFAULT_ESP_BYTES, Firmware, TableKind, resolve_shape
from imagewright.programs import mmdebstrap

__all__ = [
    "CustomizationReport",
    "DistroBuildReport",
    "FileToCopy",
    "build_distribution",
    "is_tarball_output",
    "manifest_path",
]

#: ``progress(phase, done, total)``: fetch, unpack, configure, customize, pack, image, prepare.
Progress = Callable[[str, int, int | None], None]

_PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")
_TARBALL_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.zst")
#: mmdebstrap's own messages for the failures a user causes, and the sentence each becomes.
_FAILURES: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"Unable to locate package (\S+)|Package '?(\S+?)'? has no installation candidate"),
        "The package '{0}' does not exist in {release}; check its name (apt-cache search) or the mirror.",
    ),
    (
        re.compile(
            r"(Could not connect|Connection refused|Temporary failure resolving|Could not resolve|"
            r"Failed to fetch|Unable to connect|No route to host|Connection timed out)"
        ),
        "The mirror {mirror} cannot be reached or does not serve {release} ({line}).",
    ),
    (
        re.compile(r"(does not have a Release file|404\s+Not Found|Release' does not)"),
        "The mirror {mirror} has no {release} ({line}).",
    ),
)


@dataclass
class CustomizationReport:
    name: str
    summary: str
    changes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "summary": self.summary, "changes": list(self.changes)}


@dataclass
class DistroBuildReport:
    """What a distribution build made (JSON via ``to_dict``)."""

    release: str
    variant: str
    context: str
    kernel_package: str
    sources: str
    source_lines: list[str]
    mode: str
    source_date_epoch: int | None
    output: str
    manifest: str
    packages: int
    #: ``.deb`` files apt downloaded (0 when the local cache had them all).
    packages_downloaded: int
    cache: str | None
    #: The root filesystem cache: "hit" (mmdebstrap did not run), "stored", or "off".
    rootfs_cache: str
    rootfs_key: str | None
    customizations: list[CustomizationReport]
    #: prepare's operation results (name → changes) on the built disk.
    prepare: list[dict[str, Any]]
    disk: BuildReport | None
    seconds: float
    phase_seconds: dict[str, float]
    notes: list[str] = field(default_factory=list)
    #: Where mmdebstrap's chroot was: "memory" (tmpfs), "disk", or None (it did not run).
    chroot: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "variant": self.variant,
            "context": self.context,
            "kernel_package": self.kernel_package,
            "sources": self.sources,
            "source_lines": list(self.source_lines),
            "mode": self.mode,
            "source_date_epoch": self.source_date_epoch,
            "output": self.output,
            "manifest": self.manifest,
            "packages": self.packages,
            "packages_downloaded": self.packages_downloaded,
            "cache": self.cache,
            "rootfs_cache": self.rootfs_cache,
            "rootfs_key": self.rootfs_key,
            "chroot": self.chroot,
            "customizations": [c.to_dict() for c in self.customizations],
            "prepare": list(self.prepare),
            "disk": self.disk.to_dict() if self.disk is not None else None,
            "seconds": round(self.seconds, 3),
            "phase_seconds": {k: round(v, 3) for k, v in self.phase_seconds.items()},
            "notes": list(self.notes),
        }


def is_tarball_output(output: Path) -> bool:
    return output.name.endswith(_TARBALL_SUFFIXES)


def manifest_path(output: Path) -> Path:
    """``disk.qcow2`` → ``disk.qcow2.packages``."""
    return output.with_name(output.name + ".packages")


def _epoch(value: int | None, snapshot_time: int | None) -> int | None:
    if value is not None:
        if value < 0:
            raise InvalidArgumentError("SOURCE_DATE_EPOCH must be a non-negative number of seconds.")
        return value
    configured = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if configured:
        if not configured.isdigit():
            raise InvalidArgumentError(f"SOURCE_DATE_EPOCH='{configured}' is not a number of seconds.")
        return int(configured)
    return snapshot_time


def _check_packages(names: Sequence[str]) -> tuple[str, ...]:
    for name in names:
        if not _PACKAGE_NAME.fullmatch(name):
            raise InvalidArgumentError(
                f"'{name}' is not a Debian package name (lower-case letters, digits, + - .)."
            )
    return tuple(dict.fromkeys(names))


def mmdebstrap_mode() -> str:
    """``unshare`` unless root cannot create namespaces (then ``root``)."""
    if os.geteuid() != 0:
        return "unshare"
    return "unshare" if mmdebstrap.root_can_unshare() else "root"


def build_distribution(
    release: str,
    output: str | os.PathLike[str],
    *,
    variant: str = "minbase",
    packages: Sequence[str] = (),
    context: str = "none",
    kernel: str = "cloud",
    mirror: str | None = None,
    snapshot: str | None = None,
    source_date_epoch: int | None = None,
    size: int | None = None,
    swap: int = 0,
    table: TableKind | None = None,
    firmware: Firmware | None = None,
    esp_size: int | None = None,
    efi_loader: LoaderChoice = "auto",
    append: str = "",
    output_format: str | None = None,
    files: Sequence[FileToCopy] = (),
    commands: Sequence[str] = (),
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    reuse_rootfs: bool = True,
    rootfs_cache_entries: int | None = None,
    keep_rootfs: str | os.PathLike[str] | None = None,
    force: bool = False,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
) -> DistroBuildReport:
    """Build a cloud image of ``release`` at ``output``; see the module docstring for the phases.

    ``keep_rootfs``: also keep the root filesystem tarball the disk was made from at this path.
    ``use_cache``: keep packages (and root filesystems) in ``cache_dir``; ``reuse_rootfs``: use
    the root filesystem cache (with ``use_cache``; disk outputs only); ``rootfs_cache_entries``:
    how many root filesystems it keeps (default ``cache.DEFAULT_ROOTFS_ENTRIES``).
    """
    started = time.monotonic()
    out_path = Path(output)
    rel = parse_release(release)
    if variant not in mmdebstrap.VARIANTS:
        raise InvalidArgumentError(f"'{variant}' is not a variant; choose {', '.join(mmdebstrap.VARIANTS)}.")
    if context not in CONTEXTS:
        raise InvalidArgumentError(f"'{context}' is not a context; choose {', '.join(CONTEXTS)}.")
    if kernel not in KERNEL_FLAVOURS:
        raise InvalidArgumentError(
            f"'{kernel}' is not a kernel flavour; choose {' or '.join(KERNEL_FLAVOURS)}."
        )
    snapshot_time = parse_snapshot(snapshot)[1] if snapshot is not None else None
    sources = choose_sources(rel, mirror=mirror, snapshot=snapshot)
    check_keyring(rel)
    user_packages = _check_packages(packages)
    shape, _ = resolve_shape(
        table, firmware, swap_size=swap, esp_size=DEFAULT_ESP_BYTES if esp_size is None else esp_size
    )
    for item in files:
        if not item.source.is_file():
            raise InvalidArgumentError(f"{item.source} is not a file to copy into the image.")
    plan = DistroPlan(
        release=rel,
        variant=variant,
        packages=user_packages,
        context=context,
        kernel_flavour=kernel,
        sources=sources,
        source_date_epoch=_epoch(source_date_epoch, snapshot_time),
        files=tuple(files),
        commands=tuple(commands),
        append=append,
        firmware=shape.firmware,
    )
    tarball_only = is_tarball_output(out_path)
    manifest = manifest_path(out_path)
    for path in (out_path, manifest):
        if path.exists() and not force:
            raise OutputExistsError(f"{path} already exists; use --force to overwrite it.")
    if size is not None and size <= 0:
        raise InvalidArgumentError("--size must be a positive size such as 4G.")
    mode = mmdebstrap_mode()
    selected = [c for c in CUSTOMIZATIONS if c.applies(plan)]
    include = list(dict.fromkeys([name for c in selected for name in c.packages(plan)] + list(user_packages)))

    clock = _PhaseClock(progress)
    phase = clock.enter
    cache_root = Path(cache_dir) if cache_dir else default_cache_dir()
    cache = PackageCache(cache_root, rel) if use_cache else None
    rootfs_cache: RootfsCache | None = None
    if use_cache and reuse_rootfs and not tarball_only:
        rootfs_cache = (
            RootfsCache(cache_root, max_entries=rootfs_cache_entries)
            if rootfs_cache_entries is not None
            else RootfsCache(cache_root)
        )
    reports = [CustomizationReport(c.name, c.summary) for c in selected]
    notes = list(plan.notes)
    with ScratchFiles(out_path) as scratch, contextlib.ExitStack() as stack:
        work = scratch.scratch_directory("distro").absolute()
        scripts = _write_scripts(plan, selected, reports, work)
        # mmdebstrap compresses by the target's suffix: a disk build reads a plain .tar fastest.
        suffix = next(s for s in _TARBALL_SUFFIXES if out_path.name.endswith(s)) if tarball_only else ".tar"
        tarball = work / f"rootfs{suffix}"
        listing = work / "packages"
        # mmdebstrap's chroot (its TMPDIR) on tmpfs when memory allows: see _chroot_bytes.
        memory = memory_scratch_directory(_chroot_bytes(plan))
        in_memory = stack.enter_context(ScratchFiles(out_path, memory)) if memory is not None else None
        temporary = _temporary_directory(in_memory.scratch_directory("chroot") if in_memory else work)
        setup_hooks, save_hooks, skip = cache.hooks() if cache is not None else ((), (), ())
        request = mmdebstrap.MmdebstrapRequest(
            suite=rel.codename, target=tarball, mode=mode, variant=variant,
            mirrors=sources.lines, components=rel.vendor.components, include=tuple(include),
            hooks=(*setup_hooks, *scripts.essential, *save_hooks, *scripts.customize,
                   _manifest_hook(listing)),
            aptopts=('Acquire::Languages "none"',), dpkgopts=("force-unsafe-io",), skip=skip,
            source_date_epoch=plan.source_date_epoch, temporary_directory=temporary,
        )  # fmt: skip
        key: str | None = None
        inputs: dict[str, Any] = {}
        cached: RootfsEntry | None = None
        if rootfs_cache is not None:
            phase("cache")
            try:
                inputs = _rootfs_inputs(plan, request, scripts)
                key = rootfs_key(inputs)
                cached = rootfs_cache.lookup(key)
            except (BuildError, ProgramError) as err:
                notes.append(f"the root filesystem cache was not used: {as_clause(err)}")
        packages_downloaded = 0
        chroot: str | None = None
        if cached is not None:
            tarball, listing = cached.tarball, cached.listing
        else:
            with cache.locked() if cache is not None else contextlib.nullcontext():
                status, chroot = _run(request, plan, phase, log, disk_fallback=work if in_memory else None)
            packages_downloaded = status.packages_fetched
        entries = read_manifest(listing)
        manifest_text = "".join(f"{name}\t{version}\n" for name, version in entries)

        disk_report: BuildReport | None = None
        prepare_results: list[dict[str, Any]] = []
        if tarball_only:
            phase("image")
            with AtomicOutput(out_path, force=force) as out:
                os.replace(tarball, out.path)
                out.commit()
        else:
            phase("image")

            def finish(raw: Path) -> None:
                if context == "agent":
                    phase("prepare")
                    prepare_results.extend(_install_agent(raw))

            def image_progress(stage: str, done: int, total: int | None) -> None:
                phase("image", done, total)

            disk_report = build(
                tarball, out_path, size=size, swap=swap, table=table, firmware=firmware,
                esp_size=esp_size, efi_loader=efi_loader, cache_dir=cache_root, append=append,
                output_format=output_format, force=force, progress=image_progress, finish=finish,
            )  # fmt: skip
        rootfs_state = "hit" if cached is not None else "off"
        try:
            if cached is None and key is not None and rootfs_cache is not None and disk_report is not None:
                phase("cache")
                try:
                    stored = rootfs_cache.store(key, tarball, listing, inputs)
                    tarball, rootfs_state = stored.tarball, "stored"
                except (OSError, ImagewrightError) as err:
                    notes.append(f"the root filesystem was not kept in the cache: {as_clause(err)}")
            write_file_atomically(manifest, manifest_text, force=True)
            if keep_rootfs is not None and not tarball_only:
                with AtomicOutput(Path(keep_rootfs), force=force) as kept:
                    if rootfs_state == "off":
                        shutil.move(tarball, kept.path)
                    else:  # the cache's copy stays where it is
                        shutil.copyfile(tarball, kept.path)
                    kept.commit()
        except BaseException:
            out_path.unlink(missing_ok=True)
            manifest.unlink(missing_ok=True)
            raise
        phase("done")
    esp = disk_report.esp if disk_report is not None else None
    if esp is not None and esp.loader.owner != "guest" and rel.vendor.name != "debian":
        notes.append(
            f"the ESP holds build's UEFI loader ({esp.loader.description}), not {rel.vendor.title}'s: "
            f"it starts {rel.vendor.title}'s kernel with Secure Boot off only (on, Debian's GRUB refuses "
            "it: bad shim signature)"
        )
    if plan.source_date_epoch is None:
        notes.append("SOURCE_DATE_EPOCH was not set: file times are those of the build, so two builds differ")
    return DistroBuildReport(
        release=rel.name,
        variant=variant,
        context=context,
        kernel_package=plan.kernel_package,
        sources=sources.describe(),
        source_lines=list(sources.lines),
        mode=mode,
        source_date_epoch=plan.source_date_epoch,
        output=str(out_path),
        manifest=str(manifest),
        packages=len(entries),
        packages_downloaded=packages_downloaded,
        cache=str(cache.directory) if cache is not None else None,
        rootfs_cache=rootfs_state,
        chroot=chroot,
        rootfs_key=key,
        customizations=reports,
        prepare=prepare_results,
        disk=disk_report,
        seconds=time.monotonic() - started,
        phase_seconds={k: v for k, v in clock.seconds.items() if k != "done"},
        notes=notes,
    )


class _PhaseClock:
    """Passes phases on to ``progress`` and adds up the seconds spent in each."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.seconds: dict[str, float] = {}
        self.current = ""
        self.since = time.monotonic()

    def enter(self, name: str, done: int = 0, total: int | None = None) -> None:
        if name != self.current:
            now = time.monotonic()
            if self.current:
                self.seconds[self.current] = self.seconds.get(self.current, 0.0) + now - self.since
            self.current, self.since = name, now
        if self.progress is not None:
            self.progress(name, done, total)


@dataclass
class _Scripts:
    essential: list[mmdebstrap.Hook]
    customize: list[mmdebstrap.Hook]
    #: Every script's name and text, in run order (part of the root filesystem cache key).
    texts: list[tuple[str, str]] = field(default_factory=list)


def _rootfs_inputs(
    plan: DistroPlan, request: mmdebstrap.MmdebstrapRequest, scripts: _Scripts
) -> dict[str, Any]:
    """Everything that decides the root filesystem tarball's bytes (cache.rootfs_key's input)."""
    return {
        "format": 1,
        "imagewright": __version__,
        "mmdebstrap": mmdebstrap.version(),
        "architecture": architecture(),
        "release": plan.release.name,
        "variant": plan.variant,
        "mode": request.mode,
        "include": sorted(request.include),
        "components": list(request.components),
        "sources": list(plan.sources.lines),
        "archive": archive_state(plan.sources),
        "source_date_epoch": plan.source_date_epoch,
        "aptopts": list(request.aptopts),
        "dpkgopts": list(request.dpkgopts),
        "scripts": [[name, text] for name, text in scripts.texts],
    }


def _write_scripts(
    plan: DistroPlan, selected: list[Customization], reports: list[CustomizationReport], work: Path
) -> _Scripts:
    """One script file per customisation and hook; hooks that run it inside the target."""
    scripts = _Scripts([], [])
    directory = work / "hooks"
    directory.mkdir(mode=0o755)
    for number, (custom, report) in enumerate(zip(selected, reports, strict=True)):
        for kind, make in (("essential", custom.essential), ("customize", custom.customize)):
            if make is None:
                continue
            script = TargetScript()
            make(plan, script)
            path = directory / f"{kind}-{number:02d}-{custom.name}.sh"
            text = script.text()
            path.write_text(text)
            scripts.texts.append((path.name, text))
            path.chmod(0o644)
            report.changes += script.changes
            hook = mmdebstrap.Hook(kind, f'chroot "$1" /bin/sh -s < {shlex.quote(str(path))}')
            (scripts.essential if kind == "essential" else scripts.customize).append(hook)
        if custom.done_elsewhere:
            report.changes.append(custom.done_elsewhere)
    return scripts


def _manifest_hook(listing: Path) -> mmdebstrap.Hook:
    """The guest's own dpkg-query lists what is installed (read on the host side of the hook)."""
    query = "dpkg-query --show --showformat='${binary:Package}\\t${Version}\\t${db:Status-Status}\\n'"
    return mmdebstrap.Hook("customize", f'chroot "$1" {query} > {shlex.quote(str(listing))}')


#: The manifest is dpkg's listing of a few thousand lines at most; more is not a manifest.
MAX_MANIFEST_BYTES = 16 << 20


def read_manifest(listing: Path) -> list[tuple[str, str]]:
    """``(package, version)`` of every installed package, sorted by name."""
    try:
        with listing.open("rb") as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as err:
        raise BuildError(f"The package manifest was not written by the build ({err.strerror}).") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise BuildError("The package manifest is larger than any package list; the build is not trusted.")
    entries: list[tuple[str, str]] = []
    for line in data.decode("utf-8", "replace").splitlines():
        fields = line.split("\t")
        if len(fields) == 3 and fields[2] == "installed":
            entries.append((fields[0], fields[1]))
    if not entries:
        raise BuildError("The build installed no package according to dpkg; nothing was written.")
    return sorted(entries)


def _temporary_directory(work: Path) -> Path:
    """mmdebstrap's TMPDIR inside our scratch space (reachable by an unshared user's root)."""
    tmp = work / "tmp"
    tmp.mkdir()
    if os.geteuid() != 0:
        # mmdebstrap(1), TMPDIR: in unshare mode the directory must be world-writable and its
        # ancestors world-searchable for the subordinate root.
        work.chmod(0o711)
        tmp.chmod(0o1777)
    return tmp


#: mmdebstrap's chroot at its largest for a minbase with cloud-init and its downloaded packages
#: is 0.8 GiB (tmpfs use sampled during bench/build_bench.py); the guess leaves room to spare,
#: and every package named beyond that is guessed large.
_CHROOT_BYTES = 2 << 30
_CHROOT_BYTES_PER_PACKAGE = 64 << 20
_CHROOT_BYTES_STANDARD = 1 << 30
#: What dpkg, apt and tar say when the chroot's filesystem is full.
_NO_SPACE = "No space left on device"


def _chroot_bytes(plan: DistroPlan) -> int:
    """The room mmdebstrap's chroot is given on tmpfs (a guess; a full tmpfs falls back to disk)."""
    extra = _CHROOT_BYTES_STANDARD if plan.variant != "minbase" else 0
    return _CHROOT_BYTES + extra + _CHROOT_BYTES_PER_PACKAGE * len(plan.packages)


def _run(
    request: mmdebstrap.MmdebstrapRequest,
    plan: DistroPlan,
    phase: Callable[[str, int, int | None], None],
    log: Callable[[str], None] | None,
    *,
    disk_fallback: Path | None = None,
) -> tuple[mmdebstrap.StatusReader, str]:
    """Run mmdebstrap; when its chroot on tmpfs filled up, once more with the chroot in
    ``disk_fallback`` (the package set was larger than ``_chroot_bytes`` guessed). Returns its
    status and where the chroot was in the end ("memory": ``disk_fallback`` is given)."""
    full = False

    def watch(line: str) -> None:
        nonlocal full
        full = full or _NO_SPACE in line
        if log is not None:
            log(line)

    try:
        status = mmdebstrap.run_mmdebstrap(request, progress=phase, log=watch)
        return status, "memory" if disk_fallback is not None else "disk"
    except ProgramError as err:
        if not (full and disk_fallback is not None):
            raise _explain(err, plan) from None
    if log is not None:
        log("imagewright: the chroot filled the memory-backed scratch space; building it on disk instead")
    request.target.unlink(missing_ok=True)
    on_disk = dataclasses.replace(request, temporary_directory=_temporary_directory(disk_fallback))
    return _run(on_disk, plan, phase, log)


def _explain(err: ProgramError, plan: DistroPlan) -> BuildError:
    """mmdebstrap's failure as one sentence about what the user gave."""
    line = " ".join(str(err).split(": ", 1)[-1].split())
    mirror = plan.sources.mirror or "the default mirror"
    for pattern, sentence in _FAILURES:
        match = pattern.search(line)
        if match is not None:
            name = next((g for g in match.groups() if g), "")
            text = sentence.format(name, release=plan.release.name, mirror=mirror, line=line.rstrip("."))
            return BuildError(text)
    return BuildError(
        f"Building the {plan.release.name} root filesystem failed: {line.rstrip('.')}; nothing was written."
    )


def _install_agent(raw: Path) -> list[dict[str, Any]]:
    from imagewright.ops.prepare import PrepareOptions, prepare

    report = prepare(raw, operations=["agent"], options=PrepareOptions(agent=True))
    return [op.to_dict() for op in report.operations]
