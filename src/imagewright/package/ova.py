"""``package ova``: an OVA (descriptor, manifest, certificate, streamOptimized disk) in one pass.

Member order is the one streaming importers need (spec digest 2.1, 2.6): ``NAME.ovf``,
``NAME.mf``, ``NAME.cert`` (when signed), ``NAME-disk1.vmdk``. The first three depend on the
disk (its size, its digest), which is known only once it is written; the disk is the only
large member, so it is written first, straight into its place in the archive, and the head
is filled in last::

    [ovf header][descriptor, padded][mf header][manifest][cert header][certificate] |
    [vmdk header][the streamOptimized VMDK, as the pass writes it ....][end of archive]
    ^ 0                                                                 ^ reserved: R

R is known before the pass: the manifest's and the certificate's lengths depend only on
names, digest and key sizes, and the descriptor's only on the digits of two numbers, so it
is sized for the largest and padded with trailing blanks (XML allows white space after the
root element). One read of the source, one compression, every byte hashed as it is written;
the output appears under its name only when complete (``files.AtomicOutput``).
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from imagewright.direct_io import read_digests
from imagewright.errors import InvalidArgumentError
from imagewright.files import AtomicOutput
from imagewright.formats.base import Limits
from imagewright.package.deflate import DEFAULT_LEVEL
from imagewright.package.grains import GrainBatch
from imagewright.package.ovf_descriptor import CONTROLLERS, DiskFacts, MachineSpec, build_descriptor
from imagewright.package.passes import Progress, SequentialFile, read_source, run_pass
from imagewright.package.signing import Signer
from imagewright.package.tar_writer import BLOCK, check_member_name, end_of_archive, padding, ustar_header
from imagewright.package.vmdk_stream import StreamOptimizedWriter, VmdkOptions

#: ``--digest`` names → manifest algorithm names.
DIGEST_NAMES = {"sha1": "SHA1", "sha256": "SHA256", "sha512": "SHA512"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
#: The widest the descriptor's numbers can be (a byte count below 2^64).
_WIDEST = 10**19


@dataclass(frozen=True)
class OvaOptions:
    """What goes into the package besides the disk."""

    machine: MachineSpec
    digest: str = "sha256"
    signer: Signer | None = None
    vmdk_hw_version: str = "4"
    vmdk_tools_version: str = "2147483647"

    def __post_init__(self) -> None:
        if self.digest not in DIGEST_NAMES:
            raise InvalidArgumentError(
                f"'{self.digest}' is not a manifest digest; choose sha1, sha256 or sha512."
            )
        if not _NAME.match(self.machine.name):
            raise InvalidArgumentError(
                f"'{self.machine.name[:80]}' cannot name the package's files: use letters, digits, "
                "'.', '_' and '-' (at most 80, starting with a letter or digit)."
            )

    @property
    def algorithm(self) -> str:
        return DIGEST_NAMES[self.digest]


@dataclass
class OvaMember:
    name: str
    size: int
    digest: str


@dataclass
class OvaResult:
    output: str
    size: int
    virtual_size: int
    populated_size: int
    digest_algorithm: str
    members: list[OvaMember]
    signed: bool
    source_format: str
    seconds: float
    #: sha256 (and friends) of the OVA file itself, when asked for.
    checksums: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_name(output: Path) -> str:
    """The machine name an output file suggests (``vm.ova`` → ``vm``)."""
    stem = output.name[:-4] if output.name.lower().endswith(".ova") else output.stem
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", stem).lstrip("._-")[:80]
    return cleaned or "vm"


class OvaLayout:
    """The member names and the reserved head of an OVA (see the module docstring)."""

    def __init__(self, options: OvaOptions) -> None:
        name = options.machine.name
        self.options = options
        self.ovf_name = check_member_name(f"{name}.ovf")
        self.mf_name = check_member_name(f"{name}.mf")
        self.cert_name = check_member_name(f"{name}.cert")
        self.disk_name = check_member_name(f"{name}-disk1.vmdk")
        widest = DiskFacts(self.disk_name, _WIDEST, _WIDEST, _WIDEST)
        self.ovf_length = len(build_descriptor(options.machine, widest).encode("utf-8"))
        self.mf_length = len(self.manifest({self.ovf_name: "0", self.disk_name: "0"}))
        self.cert_length = (
            0 if options.signer is None else len(self.certificate(b"\0" * options.signer.signature_length))
        )
        members = [
            (self.ovf_length, True),
            (self.mf_length, True),
            (self.cert_length, options.signer is not None),
        ]
        self.head = sum(BLOCK + length + len(padding(length)) for length, present in members if present)

    def _line(self, name: str, value: str) -> str:
        return f"{self.options.algorithm}({name})= {value}\n"

    def manifest(self, digests: dict[str, str]) -> bytes:
        """``.mf`` bytes; every digest the algorithm's length (placeholders are widened)."""
        width = hashlib.new(self.options.digest).digest_size * 2
        return "".join(self._line(name, value.rjust(width, "0")) for name, value in digests.items()).encode(
            "ascii"
        )

    def certificate(self, signature: bytes) -> bytes:
        signer = self.options.signer
        assert signer is not None
        return self._line(self.mf_name, signature.hex()).encode("ascii") + signer.certificate_pem()

    def descriptor(self, disk: DiskFacts) -> bytes:
        text = build_descriptor(self.options.machine, disk).encode("utf-8")
        if len(text) > self.ovf_length:
            raise AssertionError("the descriptor outgrew its reserved length")
        # Trailing blanks after the root element fill the reserved length exactly.
        return text + b" " * (self.ovf_length - len(text))


def package_ova(
    src: str | Path,
    output: str | Path,
    options: OvaOptions,
    *,
    force: bool = False,
    limits: Limits | None = None,
    progress: Progress | None = None,
    checksums: tuple[str, ...] = (),
    level: int = DEFAULT_LEVEL,
) -> OvaResult:
    """Write the OVA ``output`` holding the disk of ``src`` (any format imagewright reads)."""
    started = time.monotonic()
    src_path, out_path = Path(src), Path(output)
    layout = OvaLayout(options)
    with AtomicOutput(out_path, force=force) as out:
        source = read_source(src_path, out.scratch, limits, progress)
        writer = OvaWriter(out.path, layout, source.virtual_size)
        try:
            run_pass(source, [writer], progress=progress, level=level)
            digests = writer.close_archive(checksums)
        finally:
            writer.close()
        result = writer.result(out_path, source.format)
        result.checksums = digests
        out.commit()
    result.seconds = time.monotonic() - started
    return result


class OvaWriter:
    """A ``GrainTarget`` writing the OVA at ``path``: the disk during the pass, the head after."""

    def __init__(self, path: Path, layout: OvaLayout, virtual_size: int) -> None:
        self.layout = layout
        self.virtual_size = virtual_size
        machine = layout.options.machine
        self.file = SequentialFile(path, (layout.options.digest,), start=layout.head + BLOCK, writeback=True)
        self.vmdk = StreamOptimizedWriter(
            self.file.write,
            virtual_size,
            VmdkOptions(
                adapter_type=CONTROLLERS[machine.controller].vmdk_adapter,
                hw_version=layout.options.vmdk_hw_version,
                tools_version=layout.options.vmdk_tools_version,
                file_name=layout.disk_name,
            ),
        )
        self.members: list[OvaMember] = []
        self.size = 0

    # GrainTarget
    def batch(self, batch: GrainBatch) -> None:
        self.vmdk.batch(batch)

    def finish(self) -> None:
        self.vmdk.finish()

    def close_archive(self, checksums: tuple[str, ...] = ()) -> dict[str, str]:
        """Write the disk's header, the end of the archive and the head; flush the file.

        ``checksums``: digests of the whole OVA, read back (``direct_io.read_digests``) before
        the final fsync.
        """
        layout = self.layout
        file = self.file
        disk_size = file.size
        disk_digest = file.digests()[layout.options.digest]
        file.write_at(layout.head, ustar_header(layout.disk_name, disk_size))
        end = layout.head + BLOCK + disk_size
        tail = padding(disk_size) + end_of_archive(end + len(padding(disk_size)))
        file.write_at(end, tail)
        self.size = end + len(tail)
        capacity = self.vmdk.capacity_sectors * 512
        descriptor = layout.descriptor(
            DiskFacts(layout.disk_name, disk_size, capacity, self.vmdk.populated_size)
        )
        algorithm = layout.options.digest
        ovf_digest = hashlib.new(algorithm, descriptor).hexdigest()
        manifest = layout.manifest({layout.ovf_name: ovf_digest, layout.disk_name: disk_digest})
        head = [(layout.ovf_name, descriptor), (layout.mf_name, manifest)]
        signer = layout.options.signer
        if signer is not None:
            head.append(
                (layout.cert_name, layout.certificate(signer.sign(manifest, layout.options.algorithm)))
            )
        blob = b"".join(ustar_header(name, len(data)) + data + padding(len(data)) for name, data in head)
        if len(blob) != layout.head:
            raise AssertionError(f"the OVA head is {len(blob)} bytes, not the {layout.head} reserved")
        file.write_at(0, blob)
        digests = read_digests(file.path, checksums, self.size) if checksums else {}
        file.finish(self.size)
        self.members = [
            OvaMember(name, len(data), hashlib.new(algorithm, data).hexdigest()) for name, data in head
        ] + [OvaMember(layout.disk_name, disk_size, disk_digest)]
        return digests

    def close(self) -> None:
        self.file.close()

    def result(self, output: Path, source_format: str) -> OvaResult:
        return OvaResult(
            output=str(output),
            size=self.size,
            virtual_size=self.vmdk.capacity_sectors * 512,
            populated_size=self.vmdk.populated_size,
            digest_algorithm=self.layout.options.algorithm,
            members=self.members,
            signed=self.layout.options.signer is not None,
            source_format=source_format,
            seconds=0.0,
        )
