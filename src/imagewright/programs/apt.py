"""APT and dpkg (Debian ``apt``, ``dpkg``): resolve a package, download it, read its files.

Used to take files from the Debian archive without root and without installing anything on
the host (the test guest's kernel; the signed UEFI boot loaders ``build`` puts on an ESP):
``apt-cache policy`` names the version APT would install (its *candidate*), ``apt-cache
depends`` names the versioned kernel package behind ``linux-image-amd64``, ``apt-get
download`` fetches the ``.deb`` into a directory (no root needed; APT only warns that its
``_apt`` user cannot write there), and ``dpkg-deb --fsys-tarfile`` streams the package's file
tree as one tar archive whatever compression the ``data.tar`` member uses.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath

from imagewright.errors import ProgramError
from imagewright.programs.runner import run_program, start_program, stop_program, telling_line

#: ``apt-cache`` prints one relation per line: ``  Depends: linux-image-6.1.0-56-amd64``;
#: alternatives are marked with ``|`` and virtual packages with ``<...>``.
_RELATION_KINDS = ("Depends", "PreDepends", "Pre-Depends")


def package_depends(package: str, *, timeout: float = 120.0) -> list[str]:
    """Names of the packages ``package`` directly depends on, as ``apt-cache depends`` lists them."""
    result = run_program(
        ["apt-cache", "depends", "--no-recommends", "--no-suggests", package],
        timeout=timeout,
        what=f"asking APT what {package} depends on",
    )
    names: list[str] = []
    for raw in result.stdout_text.splitlines():
        line = raw.strip().lstrip("|")
        kind, sep, name = line.partition(":")
        if not sep or kind.strip() not in _RELATION_KINDS:
            continue
        name = name.strip()
        if name and not name.startswith("<"):
            names.append(name)
    return names


def candidate_version(package: str, *, timeout: float = 120.0) -> str | None:
    """The version APT would install for ``package`` (``apt-cache policy``), or None if it has none."""
    result = run_program(
        ["apt-cache", "policy", package],
        timeout=timeout,
        what=f"asking APT about {package}",
    )
    for raw in result.stdout_text.splitlines():
        key, sep, value = raw.strip().partition(":")
        if sep and key == "Candidate":
            version = value.strip()
            return None if version in ("", "(none)") else version
    return None


def download_package(package: str, dest_dir: Path, *, timeout: float = 1800.0) -> Path:
    """``apt-get download PACKAGE`` into ``dest_dir``; returns the ``.deb`` it wrote."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in dest_dir.glob("*.deb")}
    run_program(
        ["apt-get", "download", "-q", package],
        cwd=dest_dir,
        timeout=timeout,
        what=f"downloading the Debian package {package}",
    )
    new = sorted(p for p in dest_dir.glob(f"{package}_*.deb") if p.name not in before)
    candidates = new or sorted(dest_dir.glob(f"{package}_*.deb"))
    if not candidates:
        raise ProgramError(f"apt-get download reported success but wrote no {package} package.")
    return candidates[-1]


@contextlib.contextmanager
def open_package_tree(deb: Path) -> Iterator[tarfile.TarFile]:
    """The file tree of ``deb`` as a streaming tar (``dpkg-deb --fsys-tarfile``); read it in order."""
    proc = start_program(
        ["dpkg-deb", "--fsys-tarfile", os.fspath(deb)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            yield tar
        # Drain what the caller did not read so dpkg-deb can finish and report its status.
        while proc.stdout.read(1 << 20):
            pass
        stderr = proc.stderr.read() if proc.stderr is not None else b""
        if proc.wait() != 0:
            raise ProgramError(
                f"dpkg-deb could not read {deb.name}: {telling_line(stderr.decode('utf-8', 'replace'))}"
            )
    except tarfile.TarError as err:
        raise ProgramError(f"The package {deb.name} holds an unreadable file tree: {err}.") from None
    finally:
        stop_program(proc)


def extract_package_files(deb: Path, wanted: Mapping[str, Path], *, max_file_bytes: int = 256 << 20) -> None:
    """Write the regular files of ``deb`` named in ``wanted`` (package paths such as
    ``usr/lib/shim/shimx64.efi.signed``) to the host paths they map to.

    ProgramError when one is missing from the package or larger than ``max_file_bytes``.
    """
    remaining = {PurePosixPath(name.lstrip("/")): target for name, target in wanted.items()}
    with open_package_tree(deb) as tar:
        for member in tar:
            path = PurePosixPath(member.name)  # "./usr/lib/x" -> "usr/lib/x"
            target = remaining.get(path)
            if target is None or not member.isfile():
                continue
            if member.size > max_file_bytes:
                raise ProgramError(
                    f"The package {deb.name} holds a {member.size}-byte /{path}; that is not plausible."
                )
            source = tar.extractfile(member)
            if source is None:
                continue
            with source, target.open("wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
            del remaining[path]
    if remaining:
        raise ProgramError(f"The package {deb.name} holds no /{sorted(remaining)[0]}.")
