"""Building blocks the package tests share: source disks made by qemu tools, and the
streamOptimized VMDK of a source written by the package stage's own pass."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from tests.fixtures.tools import qemu_img, qemu_io_write, run, sparse_file, write_at

from imagewright.files import ScratchFiles
from imagewright.ops.convert import ImageSource
from imagewright.ops.convert.raw_stream import RawStream
from imagewright.package import passes
from imagewright.package.passes import SequentialFile, read_source, run_pass
from imagewright.package.vmdk_stream import StreamOptimizedWriter, VmdkOptions

MiB = 1 << 20


def make_disk(path: Path, size: int, writes: list[tuple[int, int, int]], fmt: str = "raw") -> Path:
    """A disk of ``size`` bytes with ``(offset, length, pattern)`` writes, in ``fmt``."""
    raw = path.with_suffix(".raw") if fmt != "raw" else path
    sparse_file(raw, size)
    for offset, length, pattern in writes:
        qemu_io_write(raw, "raw", offset, length, pattern)
    if fmt != "raw":
        qemu_img("convert", "-f", "raw", "-O", fmt, raw, path)
        raw.unlink()
    return path


def write_vmdk(source: Path, output: Path, options: VmdkOptions | None = None) -> StreamOptimizedWriter:
    """``source`` (any format) as a streamOptimized VMDK written by one pass."""
    with ScratchFiles(output) as scratch:
        prepared = read_source(source, scratch.scratch)
        sink = SequentialFile(output)
        try:
            writer = StreamOptimizedWriter(
                sink.write, prepared.virtual_size, options or VmdkOptions(file_name=output.name)
            )
            run_pass(prepared, [writer])
            sink.finish()
        finally:
            sink.close()
    return writer


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def libvmdk_sha256(path: Path) -> tuple[int, str]:
    """(media size, sha256 of the guest) as libvmdk reads the VMDK: a reader independent of QEMU."""
    import pyvmdk

    handle = pyvmdk.handle()
    handle.open(str(path))
    try:
        handle.open_extent_data_files()
        digest = hashlib.sha256()
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
        return handle.get_media_size(), digest.hexdigest()
    finally:
        handle.close()


SCHEMAS = Path(__file__).parent / "schemas"


def ovf_schema(version: str, directory: Path) -> object:
    """The OVF structure rules (``schemas/``) for the envelope namespace of ``version``."""
    import xmlschema

    namespace = {
        "1.0": "http://schemas.dmtf.org/ovf/envelope/1",
        "2.0": "http://schemas.dmtf.org/ovf/envelope/2",
    }
    for name in ("rasd.xsd", "vssd.xsd"):
        (directory / name).write_text((SCHEMAS / name).read_text())
    envelope = directory / "ovf-envelope.xsd"
    envelope.write_text((SCHEMAS / "ovf-envelope.xsd").read_text().replace("{OVF_NS}", namespace[version]))
    return xmlschema.XMLSchema(str(envelope))


def make_key(
    directory: Path, name: str, *, issuer: tuple[Path, Path] | None = None, ca: bool = False
) -> tuple[Path, Path]:
    """An RSA key and an X.509 certificate made by openssl: self-signed, or issued by ``issuer``."""
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    subject = f"/CN={name}"
    if issuer is None:
        extra = ["-addext", "basicConstraints=critical,CA:TRUE"] if ca else []
        run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
            "-days", "30", "-subj", subject, *extra)  # fmt: skip
        return key, cert
    csr = directory / f"{name}.csr"
    run(
        "openssl",
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        key,
        "-out",
        csr,
        "-subj",
        subject,
    )
    run("openssl", "x509", "-req", "-in", csr, "-CA", issuer[1], "-CAkey", issuer[0], "-CAcreateserial",
        "-out", cert, "-days", "30")  # fmt: skip
    return key, cert


def publish_keys(directory: Path) -> dict[str, tuple[Path, Path]]:
    """The user's and the cloud's keys and certificates, as ``publish`` takes them (``--cert`` /
    ``--privatekey`` / ``--sign`` of the user, ``--ec2cert`` of the cloud)."""
    return {"user": make_key(directory, "user"), "cloud": make_key(directory, "cloud")}


def publish_sources(
    directory: Path, size: int, writes: list[tuple[int, int, int]], random_at: int, seed: int
) -> tuple[Path, Path]:
    """A raw disk of ``size`` bytes with pattern ``writes`` (``make_disk``) and 2 MiB of seeded
    random bytes at ``random_at`` (data that does not compress), and the same disk as qcow2."""
    raw = make_disk(directory / "disk.raw", size, writes)
    write_at(raw, random_at, random.Random(seed).randbytes(2 * MiB))
    qcow2 = directory / "disk.qcow2"
    qemu_img("convert", "-f", "raw", "-O", "qcow2", raw, qcow2)
    return raw, qcow2


def tar_members(path: Path) -> list[str]:
    """Member names in archive order, as GNU tar lists them."""
    return run("tar", "tf", path).stdout.decode().split()


def extract(path: Path, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    run("tar", "xf", path, "-C", directory)
    return directory


def repack(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """An OVA (USTAR, in the given order) holding ``members`` as given: for hostile packages."""
    import io
    import tarfile

    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def read_members(path: Path) -> list[tuple[str, bytes]]:
    import tarfile

    with tarfile.open(path) as tar:
        out = []
        for info in tar.getmembers():
            handle = tar.extractfile(info)
            assert handle is not None
            out.append((info.name, handle.read()))
        return out


def manifest_line(algorithm: str, name: str, data: bytes) -> bytes:
    return f"{algorithm.upper()}({name})= {hashlib.new(algorithm, data).hexdigest()}\n".encode()


@contextmanager
def pass_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every source a package pass streams (``passes.stream_raw``, the real one, recorded):
    the path of a file it reads, or ``<stream>`` for a compressed raw disk read as it
    decompresses. How "the source is read once" is shown now that no program need run on it."""
    reads: list[str] = []
    real = passes.stream_raw

    def recorded(source: ImageSource, *args: object, **kwargs: object) -> None:
        reads.append("<stream>" if isinstance(source, RawStream) else str(source.path))
        real(source, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(passes, "stream_raw", recorded)
    yield reads
