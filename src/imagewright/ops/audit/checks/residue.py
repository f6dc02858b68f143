"""The build's leftovers: logs with content, package caches, files in /tmp and /var/tmp."""

from __future__ import annotations

from collections.abc import Iterator

from imagewright.guest.bounded import GuestReader
from imagewright.guest.model import FileType, join
from imagewright.ops.audit.model import AuditCheck, Leak, Severity
from imagewright.ops.prepare.operations import package_cache
from imagewright.ops.prepare.operations.logfiles import ROTATED


def run_logs(reader: GuestReader) -> Iterator[Leak]:
    if not reader.is_dir("/var/log"):
        return
    for directory, entries in reader.guest.walk("/var/log"):
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.type is not FileType.REGULAR:
                continue
            if ROTATED.search(entry.name):
                yield Leak(join(directory, entry.name), f"rotated log or journal, {entry.size} bytes")
            elif entry.size > 0:
                yield Leak(join(directory, entry.name), f"log with content, {entry.size} bytes")


def run_package_cache(reader: GuestReader) -> Iterator[Leak]:
    for pattern in package_cache.FILE_PATTERNS:
        for path in reader.glob(pattern):
            yield Leak(path, "cached package data")
    directories = reader.guest.existing_dirs(package_cache.CACHE_DIRECTORIES)
    listings = reader.guest.listdir_many(directories) if directories else {}
    for directory in directories:
        for entry in sorted(listings[directory], key=lambda e: e.name):
            yield Leak(join(directory, entry.name), "package manager cache")


def run_tmp(reader: GuestReader) -> Iterator[Leak]:
    directories = reader.guest.existing_dirs(("/tmp", "/var/tmp"))
    listings = reader.guest.listdir_many(directories) if directories else {}
    for directory in directories:
        for entry in sorted(listings[directory], key=lambda e: e.name):
            yield Leak(join(directory, entry.name), "temporary file left by the build")


LOGS_CHECK = AuditCheck(
    name="logfiles",
    severity=Severity.RESIDUE,
    summary="logs with content and rotated logs under /var/log",
    fixed_by="logfiles",
    run=run_logs,
    lists=("/var/log",),
)
PACKAGE_CACHE_CHECK = AuditCheck(
    name="package-cache",
    severity=Severity.RESIDUE,
    summary="package caches (apt, yum, dnf, zypper, apk)",
    fixed_by="package-cache",
    run=run_package_cache,
    lists=(*(p.rpartition("/")[0] for p in package_cache.FILE_PATTERNS), *package_cache.CACHE_DIRECTORIES),
)
TMP_CHECK = AuditCheck(
    name="tmp",
    severity=Severity.RESIDUE,
    summary="files in /tmp and /var/tmp",
    fixed_by="tmp",
    run=run_tmp,
    lists=("/tmp", "/var/tmp"),
)
