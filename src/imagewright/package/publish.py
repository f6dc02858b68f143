"""``publish``: every output of one image from one read — one inspection, one checksum set.

The source is opened as ``convert`` opens it (``ops.convert.open_source``: a compressed raw
disk — ``disk.raw.gz``, how cloud images travel — is judged and handed on as it decompresses,
no scratch copy; anything else is admitted by the gate and read by qemu-img) and streamed
once (``passes.run_pass``); each grain
goes to every requested target, and the compressed targets share the grain's one deflate
block. What each target does, in the table ``TARGETS`` (one record per target: its name,
what it makes, how it is built):

========  ======================================  ===========================================
raw       DIR/NAME.raw, sparse                    data grains written in place, zeros are holes
raw.gz    DIR/NAME.raw.gz                         the grains' deflate blocks as one gzip member
vmdk      DIR/NAME.vmdk (streamOptimized)         ``vmdk_stream`` on the grains
ova       DIR/NAME.ova                            ``ova.OvaWriter`` (machine spec, signing)
bundle    DIR/NAME.img.part.NN, .manifest.xml     ``bundle.BundleJob`` (EC2 keys and certificates)
qcow2     DIR/NAME.qcow2 (compat 1.1)             ``qcow2_stream`` on the grains (one data cluster
                                                  per data grain; no scratch file, no qemu-img)
========  ======================================  ===========================================

Boot-tuning (``boot_tuning``; the ``publish`` command's default, issue 12): before the pass, the
admitted source is copied to a raw scratch file and ``prepare``'s ``boot-tuning`` operation
edits the copy — GRUB timeout 0 and a serial console, cloud-init's datasource pinned, no
wait-online — so every output holds the tuned guest and the source is never written; a source
with no Linux root filesystem to edit is published as it is, and the result says why
(``tuned_source``; ``PublishResult.tuning``).

Every file is written under a temporary name and appears only when all targets are done;
``SHA256SUMS`` (sha256sum's format) lists every file written, then is itself put in place.
The digest of a file written front to back is taken as it is written; the OVA (its head is
written last) is read back once, as soon as its own target is done (a target's ``finish`` runs
on its thread, beside the others'). That read-back stays: a file's SHA-256 starts with its
head, and the OVA's manifest holds the disk's digest, so the bytes after the head are hashed
again once it is known. The qcow2's header names where its tables end up: from a raw source
whose data extents are known before the pass (``convert.possible_data``) its layout is planned
and the header known in advance (``qcow2_stream``), so it is hashed as it is written; from any
other source it is read back too. Read-backs come from the disk, not the page cache: outputs are
written and read with ``O_DIRECT`` where the filesystem allows it (``direct_io``; copying 2.5
GB into and out of fresh cache pages was a fifth of a publish's CPU).

Cost (``bench/package_bench.py``, ``BENCH_PACKAGE=publish``: a 4 GiB disk with 1 GiB of data to
qcow2, raw.gz, ova and bundle, 2 cores): about 10 CPU-s, of which the bundle's SHA-1 of the
whole tar stream (4 GiB with the zeros: SHA-1 cannot skip them) is 2.3 s on one core and the
deflate of the 1 GiB of data 2.5-3 s; every other byte is hashed once per output (sha256 of
raw.gz, the OVA's disk member and the OVA, the parts, the qcow2; sha1 of the parts) and
encrypted once (AES-CBC: one core). Measured with other work on both cores (CPU-seconds,
A/B of alternating runs): at load 8-10, 10.0-10.5 against 10.7-12.4 before ``direct_io`` and
the grain views; at load 2-5, 10.1-11.6 against 10.2-11.5 (within the noise: the page
cache's cost depends on whether the kernel hands out fresh or recycled pages, and the grain
views keep the source's 4 MiB reads alive longer, which costs the reading thread ~0.3 s of
fresh pages). ``IMAGEWRIGHT_NO_DIRECT_IO=1`` compares; the quiet numbers are in the README.

How the registry plugs in (``imagewright.registry.publishing``, the room above this one):
``publish(..., hand_over=…)`` is handed every finished file — at its temporary name, with its
size and sha256 — after the pass and before anything is put in place, so an upload that fails
fails the whole publish and leaves no file behind; ``unpublished`` targets are made for the
hand-over only (in scratch files, never put in place nor listed in ``SHA256SUMS``): the qcow2
a registry upload needs when ``--to`` names no disk file.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from imagewright.direct_io import read_digests
from imagewright.errors import InvalidArgumentError
from imagewright.files import AtomicOutput, ScratchFiles, write_file_atomically
from imagewright.formats.base import Limits
from imagewright.ops.convert import NotRawError, open_source, possible_data
from imagewright.ops.convert.output import OutputFile
from imagewright.package.bundle import BundleJob, BundleOptions
from imagewright.package.deflate import DEFAULT_LEVEL, GzipMember
from imagewright.package.grains import DigestTarget, GrainBatch
from imagewright.package.ova import OvaLayout, OvaOptions, OvaWriter
from imagewright.package.passes import Progress, SequentialFile, run_pass
from imagewright.package.qcow2_stream import CLUSTER, Qcow2StreamWriter
from imagewright.package.tuned_source import BootTuning, TuningReport, tune_source
from imagewright.package.vmdk_stream import StreamOptimizedWriter, VmdkOptions

CHECKSUM = "sha256"
SUMS_FILE = "SHA256SUMS"


@dataclass
class PublishedFile:
    target: str
    path: str
    size: int
    sha256: str


@dataclass
class PublishResult:
    source: str
    source_format: str
    virtual_size: int
    files: list[PublishedFile]
    sums: str
    seconds: float
    #: What boot-tuning did (None: not asked for).
    tuning: TuningReport | None = None

    def to_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["tuning"] = self.tuning.to_dict() if self.tuning is not None else None
        return document


@dataclass
class PublishContext:
    """What targets are built from: the request, the output directory, the pass's facts."""

    name: str
    directory: Path
    virtual_size: int
    stack: contextlib.ExitStack
    force: bool
    level: int
    ova: OvaOptions | None
    bundle: BundleOptions | None
    scratch: Callable[[str], Path] | None = None
    targets: list[str] = field(default_factory=list)
    source: Path | None = None
    #: The target being built is made for the hand-over only (a scratch file).
    building_unpublished: bool = False
    #: The guest ranges that may hold data, known before the pass (``convert.possible_data``).
    possible_data: list[tuple[int, int]] | None = None

    def output(self, file_name: str) -> AtomicOutput:
        if self.building_unpublished:
            assert self.scratch is not None
            return self.stack.enter_context(AtomicOutput(self.scratch(file_name), force=True))
        target = self.directory / file_name
        source = self.source
        if source is not None and target.exists() and target.resolve() == source.resolve():
            raise InvalidArgumentError(
                f"Publishing would overwrite the source {source}; give another --name or directory."
            )
        return self.stack.enter_context(AtomicOutput(target, force=self.force))


class Target:
    """One requested output: a ``GrainTarget`` of the pass whose ``finish`` completes it.

    ``finish`` runs on the target's own thread (``BackgroundTarget``), so each target's last
    work (flush and fsync, the heads written last, a read-back for a checksum, the bundle's
    manifest) runs beside the others' instead of after all of them.
    """

    name = ""

    def batch(self, batch: GrainBatch) -> None:
        """The next grains of the guest."""

    def finish(self) -> None:
        """Complete the files once every grain has passed."""

    def files(self) -> list[tuple[AtomicOutput, int, str]]:
        """(output, size, sha256) of every file this target made."""
        return []


class SparseRaw(Target):
    """A raw file with holes for the zero grains (``raw``; qcow2's input)."""

    name = "raw"

    def __init__(self, path: Path, size: int, output: AtomicOutput | None = None) -> None:
        self.path = path
        self.size = size
        self.output = output
        self._file = OutputFile(path)
        # Without an output (a raw nobody publishes) there is nothing to hash.
        self._digest = DigestTarget((CHECKSUM,)) if output is not None else None

    def batch(self, batch: GrainBatch) -> None:
        if self._digest is not None:
            self._digest.batch(batch)
        for run in batch.runs:
            if run.data is not None:
                self._file.write_at(run.offset, run.data)

    def finish(self) -> None:
        self._file.finish(self.size)

    def close(self) -> None:
        self._file.close()

    def files(self) -> list[tuple[AtomicOutput, int, str]]:
        if self.output is None or self._digest is None:
            return []
        return [(self.output, self.size, self._digest.hexdigests()[CHECKSUM])]


class GzipRaw(Target):
    name = "raw.gz"

    def __init__(self, context: PublishContext) -> None:
        self.output = context.output(f"{context.name}.raw.gz")
        self._file = SequentialFile(self.output.path, (CHECKSUM,), writeback=True)
        context.stack.callback(self._file.close)
        self._member = GzipMember(self._file.write)

    def batch(self, batch: GrainBatch) -> None:
        self._member.add_joined(batch.deflated, batch.crc32, batch.length)

    def finish(self) -> None:
        self._member.finish()
        self._file.finish()

    def files(self) -> list[tuple[AtomicOutput, int, str]]:
        return [(self.output, self._file.size, self._file.digests()[CHECKSUM])]


class StreamOptimizedVmdk(Target):
    name = "vmdk"

    def __init__(self, context: PublishContext) -> None:
        file_name = f"{context.name}.vmdk"
        self.output = context.output(file_name)
        self._file = SequentialFile(self.output.path, (CHECKSUM,), writeback=True)
        context.stack.callback(self._file.close)
        self._vmdk = StreamOptimizedWriter(
            self._file.write, context.virtual_size, VmdkOptions(file_name=file_name)
        )

    def batch(self, batch: GrainBatch) -> None:
        self._vmdk.batch(batch)

    def finish(self) -> None:
        self._vmdk.finish()
        self._file.finish()

    def files(self) -> list[tuple[AtomicOutput, int, str]]:
        return [(self.output, self._file.size, self._file.digests()[CHECKSUM])]


class Ova(Target):
    name = "ova"

    def __init__(self, context: PublishContext) -> None:
        if context.ova is None:
            raise InvalidArgumentError("The ova target needs the machine's description (OvaOptions).")
        self.output = context.output(f"{context.name}.ova")
        self._writer = OvaWriter(self.output.path, OvaLayout(context.ova), context.virtual_size)
        context.stack.callback(self._writer.close)
        self._sha256 = ""

    def batch(self, batch: GrainBatch) -> None:
        self._writer.batch(batch)

    def finish(self) -> None:
        self._writer.finish()
        # The head is written last, in front: the file's checksum needs one read-back.
        self._sha256 = self._writer.close_archive((CHECKSUM,))[CHECKSUM]

    def files(self) -> list[tuple[AtomicOutput, int, str]]:
        return [(self.output, self._writer.size, self._sha256)]


class Bundle(Target):
    name = "bundle"

    def __init__(self, context: PublishContext) -> None:
        if context.bundle is None:
            raise InvalidArgumentError(
                "The bundle target needs --user, --cert, --privatekey and --ec2cert (the EC2 bundling keys)."
            )
        prefix = context.bundle.prefix or f"{context.name}.img"
        self.job = BundleJob(
            context.directory,
            prefix,
            context.virtual_size,
            context.bundle,
            context.stack,
            force=context.force,
            level=context.level,
        )

    def batch(self, batch: GrainBatch) -> None:
        self.job.writer.batch(batch)

    def finish(self) -> None:
        self.job.writer.finish()
        self.job.complete()

    def files(self) -> list[tuple[AtomicOutput, int, str]]:
        parts = self.job.parts
        out = [
            (output, part.size, parts.sha256[part.filename])
            for output, part in zip(parts.outputs, parts.parts, strict=True)
        ]
        manifest = self.job.manifest_out
        out.append(
            (manifest, manifest.path.stat().st_size, read_digests(manifest.path, (CHECKSUM,))[CHECKSUM])
        )
        return out


class Qcow2(Target):
    """The qcow2 written from the grains (``qcow2_stream``), hashed as it is written when its
    layout could be planned from the source's data extents, else read back once."""

    name = "qcow2"

    def __init__(self, context: PublishContext) -> None:
        self.output = context.output(f"{context.name}.qcow2")
        self._file = SequentialFile(self.output.path, (), start=CLUSTER, writeback=True)
        context.stack.callback(self._file.close)
        self._qcow2 = Qcow2StreamWriter(
            self._file.write,
            context.virtual_size,
            possible_data=context.possible_data,
            write_at=self._file.write_at,
            checksum=CHECKSUM,
        )
        self._sha256 = ""

    def batch(self, batch: GrainBatch) -> None:
        self._qcow2.batch(batch)

    def finish(self) -> None:
        self._qcow2.finish()
        self._file.write_at(0, self._qcow2.header())
        digest = self._qcow2.digest()
        if digest is None:
            # The header is written last, in front: without a plan the file's checksum needs
            # one read-back, taken before the final fsync so the disk's last writes overlap it.
            digest = read_digests(self.output.path, (CHECKSUM,), self._qcow2.size)[CHECKSUM]
        self._sha256 = digest
        self._file.finish(self._qcow2.size)

    def files(self) -> list[tuple[AtomicOutput, int, str]]:
        return [(self.output, self._qcow2.size, self._sha256)]


def _raw(context: PublishContext) -> Target:
    output = context.output(f"{context.name}.raw")
    target = SparseRaw(output.path, context.virtual_size, output)
    context.stack.callback(target.close)
    return target


@dataclass(frozen=True)
class FinishedFile:
    """A file of this publish before it is put in place: where it is now, what it will be."""

    file: PublishedFile
    location: Path
    #: Made for the hand-over only (``unpublished``): never put in place.
    unpublished: bool = False


@dataclass(frozen=True)
class TargetRecord:
    name: str
    makes: str
    build: Callable[[PublishContext], Target]


#: Every publish target, in the order they are built.
TARGETS: dict[str, TargetRecord] = {
    record.name: record
    for record in (
        TargetRecord("raw", "NAME.raw, sparse", _raw),
        TargetRecord("raw.gz", "NAME.raw.gz, one gzip member", GzipRaw),
        TargetRecord("vmdk", "NAME.vmdk, streamOptimized", StreamOptimizedVmdk),
        TargetRecord("ova", "NAME.ova, descriptor + manifest (+ certificate) + streamOptimized disk", Ova),
        TargetRecord("bundle", "NAME.img.part.NN + NAME.img.manifest.xml, an EC2 image bundle", Bundle),
        TargetRecord("qcow2", "NAME.qcow2 (compat 1.1)", Qcow2),
    )
}


def parse_targets(text: str, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The targets ``--to`` names: those of ``TARGETS`` and ``extra`` (a room above's: registry)."""
    known = [*TARGETS, *extra]
    names = tuple(dict.fromkeys(part.strip().lower() for part in text.split(",") if part.strip()))
    if not names:
        raise InvalidArgumentError("--to names no target; choose from " + ", ".join(known) + ".")
    for name in names:
        if name not in known:
            raise InvalidArgumentError(f"'{name}' is not a publish target; choose from {', '.join(known)}.")
    return names


def publish(
    image: str | Path,
    directory: str | Path,
    targets: tuple[str, ...],
    *,
    name: str | None = None,
    ova: OvaOptions | None = None,
    bundle: BundleOptions | None = None,
    force: bool = False,
    limits: Limits | None = None,
    progress: Progress | None = None,
    level: int = DEFAULT_LEVEL,
    hand_over: Callable[[list[FinishedFile]], None] | None = None,
    unpublished: tuple[str, ...] = (),
    boot_tuning: BootTuning | None = None,
) -> PublishResult:
    """Write every target of ``image`` into ``directory`` from one read; see the module docstring.

    ``boot_tuning``: tune the first boot of the published guest (prepare's ``boot-tuning``
    operation on a scratch copy; the source is never written); None publishes the source as it is.
    """
    started = time.monotonic()
    image_path, out_dir = Path(image), Path(directory)
    if not out_dir.is_dir():
        raise InvalidArgumentError(f"The output directory {out_dir} does not exist.")
    for requested in (*targets, *unpublished):
        if requested not in TARGETS:
            raise InvalidArgumentError(
                f"'{requested}' is not a publish target; choose from {', '.join(TARGETS)}."
            )
    base = name or _default_name(image_path)

    def attempt(stream: bool) -> tuple[str, int, list[PublishedFile], TuningReport | None]:
        """One attempt: the source opened as convert opens it (a compressed raw disk streamed as
        it decompresses, no scratch copy), tuned on a scratch copy when asked, every target fed
        by one pass, the files committed."""
        with contextlib.ExitStack() as stack:
            scratch = stack.enter_context(ScratchFiles(out_dir / base))
            source = stack.enter_context(
                open_source(image_path, scratch.scratch, limits, progress, stream=stream)
            )
            read, tuning = source, None
            if boot_tuning is not None:
                read, tuning = tune_source(source, scratch.scratch, boot_tuning, image_path.name, progress)
            context = PublishContext(
                name=base,
                directory=out_dir,
                virtual_size=source.virtual_size,
                stack=stack,
                force=force,
                level=level,
                ova=ova,
                bundle=bundle,
                scratch=scratch.scratch,
                targets=list(targets),
                source=image_path,
                possible_data=possible_data(read) if "qcow2" in (*targets, *unpublished) else None,
            )
            built: list[Target] = []
            hidden: set[int] = set()
            for record in TARGETS.values():
                if record.name in targets:
                    built.append(record.build(context))
                elif record.name in unpublished:
                    context.building_unpublished = True
                    built.append(record.build(context))
                    context.building_unpublished = False
                    hidden.add(len(built) - 1)
            run_pass(read, built, stage="publishing", progress=progress, level=level, concurrent=True)
            files: list[PublishedFile] = []
            outputs: list[AtomicOutput] = []
            finished: list[FinishedFile] = []
            for index, target in enumerate(built):
                for output, size, digest in target.files():
                    made = PublishedFile(target.name, str(output.target), size, digest)
                    finished.append(FinishedFile(made, output.path, unpublished=index in hidden))
                    if index not in hidden:
                        files.append(made)
                        outputs.append(output)
            sums = "".join(f"{f.sha256}  {Path(f.path).name}\n" for f in files)
            if hand_over is not None:
                hand_over(finished)
            # Each file is fsynced as it is put in place; the directory's entries once, at the end
            # (the SHA256SUMS written last syncs them: it is put in place in the same directory).
            for output in outputs:
                output.commit(sync_directory=output.target.parent != out_dir)
            write_file_atomically(out_dir / SUMS_FILE, sums, force=True)
        return source.format, source.virtual_size, files, tuning

    try:
        source_format, virtual_size, files, tuning = attempt(stream=True)
    except NotRawError:
        # A compressed fixed VHD (its footer is at the very end): read it the spooled way.
        source_format, virtual_size, files, tuning = attempt(stream=False)
    return PublishResult(
        source=str(image_path),
        source_format=source_format,
        virtual_size=virtual_size,
        files=files,
        sums=str(out_dir / SUMS_FILE),
        seconds=time.monotonic() - started,
        tuning=tuning,
    )


def _default_name(image: Path) -> str:
    stem = image.name.split(".", 1)[0]
    return stem or "image"
