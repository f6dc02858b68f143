"""What ``imagewright inspect IMAGE...`` does and prints, without click.

This is the command people run in loops over directories of images, so it starts like a
tool: ``cli.main`` runs it straight from ``sys.argv`` when the arguments are plain (see
``plain_arguments``), without importing click at all, and nothing here imports rich
(``cli.render`` writes plain text when rich would add nothing). ``cli.inspect`` is the same
command declared to click, for everything else (``--help``, a usage error ...).
``tests/test_cli_startup.py`` checks that both read the same arguments alike, and what the
plain start imports.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from imagewright.cli.format_highlights import highlights
from imagewright.cli.render import Report, emit_json
from imagewright.errors import ImagewrightError
from imagewright.formats.base import Limits
from imagewright.inspection import ContainerReport, ImageReport, inspect_image
from imagewright.units import format_size, parse_size

if TYPE_CHECKING:
    from imagewright.disk.filesystems import FilesystemInfo
    from imagewright.ops.audit import AuditReport
    from imagewright.ops.inspect_os import OsInspection
    from imagewright.ops.inspect_os.model import OsFacts


class InspectArguments(NamedTuple):
    """The parameters of ``imagewright inspect``, as its click declaration names them."""

    images: tuple[str, ...]
    as_json: bool = False
    max_virtual_size: int | None = None
    with_os: bool = False
    audit: bool = False
    strict: bool = False


#: The flags of ``inspect`` (``cli.inspect``) and the parameter each sets.
_FLAGS = {"--json": "as_json", "--os": "with_os", "--audit": "audit", "--strict": "strict"}
_MAX_VIRTUAL_SIZE = "--max-virtual-size"


def plain_arguments(args: Sequence[str]) -> InspectArguments | None:
    """The arguments of ``imagewright inspect ARGS`` when click would take them without a word
    and read them as this does; None for anything else (``--help``, ``--``, an unknown or
    repeated option, a value click would refuse, no image ...), which is left to click.

    Click's reading, as ``cli.inspect`` declares the command: options and images in any order;
    a flag may be repeated; ``--max-virtual-size`` takes the next word or ``=VALUE``; an image
    is any word not starting with ``-`` that is not a directory or an unreadable file (a path
    that cannot be examined is left to the inspection, as click leaves it).
    """
    flags = dict.fromkeys(_FLAGS.values(), False)
    images: list[str] = []
    size_text: str | None = None
    position = 0
    while position < len(args):
        token = args[position]
        position += 1
        if token in _FLAGS:
            flags[_FLAGS[token]] = True
        elif token == _MAX_VIRTUAL_SIZE or token.startswith(_MAX_VIRTUAL_SIZE + "="):
            if size_text is not None or (token == _MAX_VIRTUAL_SIZE and position == len(args)):
                return None
            if token == _MAX_VIRTUAL_SIZE:
                size_text = args[position]
                position += 1
            else:
                size_text = token.partition("=")[2]
        elif token.startswith("-") or not _plain_image(token):
            return None
        else:
            images.append(token)
    if not images or (flags["strict"] and not flags["audit"]):
        return None
    max_virtual_size = None
    if size_text is not None:
        try:
            max_virtual_size = parse_size(size_text)
        except ImagewrightError:
            return None
    return InspectArguments(tuple(images), max_virtual_size=max_virtual_size, **flags)


def _plain_image(path: str) -> bool:
    """What ``click.Path(dir_okay=False)`` accepts without a word: a path that does not exist,
    or one that is not a directory and is readable."""
    try:
        status = os.stat(path)
    except OSError:
        return True
    except ValueError:  # a NUL byte: click's to judge
        return False
    return not stat.S_ISDIR(status.st_mode) and os.access(path, os.R_OK)


def run_inspect(arguments: InspectArguments) -> int:
    """Inspect and report every image; the exit code: 1 when any image is refused, or when
    ``--audit --strict`` finds anything; 0 otherwise."""
    images, as_json, max_virtual_size, with_os, audit, strict = arguments
    limits = Limits() if max_virtual_size is None else Limits(max_virtual_size=max_virtual_size)
    reports = [inspect_image(path_spelling(path), limits=limits) for path in images]
    systems = [_os_of(report, with_os, audit) if with_os or audit else None for report in reports]
    if as_json:
        documents = []
        for report, found in zip(reports, systems, strict=True):
            document = report.to_dict()
            if found is not None and with_os:
                document["os"] = found.to_dict()
            if found is not None and found.audit is not None:
                document["audit"] = found.audit.to_dict()
            documents.append(document)
        emit_json(documents[0] if len(documents) == 1 else documents)
    else:
        out = Report()
        for index, (report, found) in enumerate(zip(reports, systems, strict=True)):
            if index:
                out.line()
            render_report(out, report)
            if found is not None:
                render_os(out, found, with_os)
        out.write()
    if any(not r.verdict.safe for r in reports):
        return 1
    if strict and any(found is None or found.audit is None or not found.audit.clean for found in systems):
        return 1
    return 0


def _os_of(report: ImageReport, facts: bool, audit: bool) -> OsInspection:
    """The operating systems in a safe image; for any other, a note why none were looked for."""
    from imagewright.errors import ImagewrightError
    from imagewright.ops.audit import AuditReport
    from imagewright.ops.inspect_os import OsInspection, inspect_os

    if not report.verdict.safe:
        note = "the image was refused; nothing inside it was read"
        return OsInspection(audit=AuditReport(notes=[note]) if audit else None, notes=[note])
    try:
        return inspect_os(report.path, report=report, facts=facts, audit=audit)
    except ImagewrightError as err:
        return OsInspection(audit=AuditReport(notes=[str(err)]) if audit else None, notes=[str(err)])


def render_os(out: Report, found: OsInspection, with_os: bool) -> None:
    for facts in found.roots:
        _render_os_facts(out, facts)
    if with_os or found.audit is None:
        for note in found.notes:
            out.line(f"{'os:':<16}{note}")
    if found.audit is not None:
        _render_audit(out, found.audit)


def _render_audit(out: Report, audit: AuditReport) -> None:
    for root in audit.roots:
        findings = root.findings
        secrets = sum(f.severity == "secret" for f in findings)
        if root.incomplete:
            unknown = ", ".join(root.incomplete)
            summary = f"{len(findings)} findings; NOT complete: the {unknown} check could not finish"
            out.line(f"{'audit:':<16}", (f"{summary} ({root.filesystem})", "bold red"))
        elif not findings:
            out.line(f"{'audit:':<16}", (f"clean: nothing would leak ({root.filesystem})", "green"))
        else:
            summary = f"{len(findings)} findings, {secrets} of them secrets ({root.filesystem})"
            out.line(f"{'audit:':<16}", (summary, "bold red" if secrets else "yellow"))
        for finding in findings:
            fix = f"prepare: {finding.fixed_by}" if finding.fixed_by else "no prepare operation fixes it"
            out.line(f"  {finding.severity.value:<9}{finding.path}  {finding.detail}  [{fix}]")
        for note in root.notes:
            out.line(f"  {'note:':<9}{note}")
    for note in audit.notes:
        out.line(f"{'audit:':<16}{note}")


def _render_os_facts(out: Report, facts: OsFacts) -> None:
    def line(label: str, value: object) -> None:
        out.line(f"  {label + ':':<14}{value}")

    dist = facts.distribution
    out.line(f"{'os:':<16}{dist.pretty_name or dist.name or dist.id or 'unknown Linux'} ({facts.filesystem})")
    if dist.id:
        version = dist.version or dist.version_id or "no version"
        codename = f" ({dist.codename})" if dist.codename and dist.codename not in version else ""
        line("distribution", f"{dist.id} {version}{codename}")
    source = f" (from {facts.architecture_source})" if facts.architecture_source else ""
    line("architecture", (facts.architecture or "unknown") + source)
    line("init system", facts.init_system or "unknown")
    if facts.boot_filesystem is not None:
        line("/boot", f"{facts.boot_filesystem} (a filesystem of its own, from fstab)")
    default_kernel = facts.boot_default.kernel if facts.boot_default else None
    for kernel in facts.kernels:
        is_default = default_kernel is not None and default_kernel.rpartition("/")[2] == kernel.path[6:]
        line("kernel", kernel.path + ("  (boots by default)" if is_default else ""))
    for initrd in facts.initrds:
        line("initrd", initrd.path)
    if facts.boot_default is not None:
        entry = facts.boot_default
        line("boot loader", f"{entry.loader} ({entry.config}): {entry.title or 'untitled'} -> {entry.kernel}")
    for database in facts.packages:
        more = " or more" if database.truncated else ""
        line("packages", f"{database.count}{more} {database.format} packages installed ({database.path})")
    line("hostname", facts.hostname or "not set")
    for mount in facts.fstab:
        where = {True: "on this disk", False: "NOT on this disk", None: ""}[mount.on_this_disk]
        line("fstab", f"{mount.spec} {mount.mountpoint} {mount.fs_type}" + (f" ({where})" if where else ""))
    cloud = facts.cloud_init
    if cloud.present:
        sources = ", ".join(cloud.datasources) if cloud.datasources else "all"
        line("cloud-init", f"{cloud.version or 'version unknown'}; datasources: {sources}")
    else:
        line("cloud-init", "not installed")
    line("agent", facts.agent or "not installed")
    line("ssh server", facts.ssh_server or "none")
    for note in facts.notes:
        line("note", note)


def path_spelling(text: str) -> str:
    """``str(pathlib.Path(text))`` (how reports have always named the image) without pathlib:
    empty and '.' components dropped, a trailing '/' too; exactly two leading slashes stay
    (POSIX leaves their meaning to the system), more become one."""
    stripped = text.lstrip("/")
    leading = len(text) - len(stripped)
    root = "//" if leading == 2 else "/" if leading else ""
    parts = [part for part in stripped.split("/") if part and part != "."]
    return root + "/".join(parts) if root or parts else "."


def render_report(out: Report, report: ImageReport, indent: int = 0) -> None:
    pad = " " * indent

    def line(label: str, value: object) -> None:
        out.line(f"{pad}{label + ':':<16}{value}")

    line("image", report.path)
    fmt = report.format + (f" ({report.subformat})" if report.subformat else "")
    line("format", fmt)
    if report.virtual_size is not None:
        line("virtual size", f"{format_size(report.virtual_size)} ({report.virtual_size} bytes)")
    if indent == 0:
        allocated = (
            f", {format_size(report.allocated_size)} allocated" if report.allocated_size is not None else ""
        )
        line("file size", f"{format_size(report.file_size)} ({report.file_size} bytes){allocated}")
    if report.backing_file:
        backing = report.backing_file + (
            f" (format {report.backing_format})" if report.backing_format else ""
        )
        line("backing file", backing)
    for label, value in highlights(report.format, report.details):
        line(label, value)
    if report.container is not None:
        _render_container(out, report.container, indent)
    if report.disk is not None:
        _render_disk(out, report, indent)
    for note in report.notes:
        line("note", note)
    verdict = str(report.verdict)
    out.line(f"{pad}{'verdict:':<16}", (verdict, "green" if report.verdict.safe else "bold red"))
    for extra in report.verdict.reasons[1:]:
        out.line((f"{pad}{'':<16}also: {extra}", "red"))


def _render_container(out: Report, container: ContainerReport, indent: int) -> None:
    pad = " " * indent
    out.line(f"{pad}{'container:':<16}{container.format} ({container.kind})")
    if container.uncompressed_size is not None:
        out.line(f"{pad}{'uncompressed:':<16}{format_size(container.uncompressed_size)}")
    for note in container.notes:
        out.line(f"{pad}{'note:':<16}{note}")
    if container.members:
        shown = container.members[:50]
        images = {image.name: image.report for image in container.images}
        rows = []
        for member in shown:
            report = images.get(member.name)
            image = ""
            if report is not None:
                image = report.format + (
                    f" {format_size(report.virtual_size)}" if report.virtual_size else ""
                )
            name = member.name + (f" -> {member.linkname}" if member.linkname else "")
            rows.append((name, member.type, format_size(member.size), image))
        out.line(f"{pad}members:")
        out.table(("Member", "Type", "Size", "Image"), rows)
        if len(container.members) > len(shown):
            out.line(f"{pad}  ... and {len(container.members) - len(shown)} more")
        for member_image in container.images:
            out.line()
            render_report(out, member_image.report, indent + 2)
    if container.inner is not None:
        out.line(f"{pad}contents:")
        render_report(out, container.inner, indent + 2)


def _fs_text(fs: FilesystemInfo | None) -> str:
    if fs is None:
        return ""
    parts = [fs.type]
    if fs.label:
        parts.append(f'LABEL="{fs.label}"')
    if fs.uuid:
        parts.append(f"UUID={fs.uuid}")
    return " ".join(parts)


def _render_disk(out: Report, report: ImageReport, indent: int) -> None:
    pad = " " * indent
    survey = report.disk
    assert survey is not None
    table_info = survey.partition_table
    if table_info is not None:
        out.line(f"{pad}{'partitions:':<16}{table_info.kind}, disk identifier {table_info.disk_id}")
        rows = [
            (
                str(part.number),
                "*" if part.bootable else "",
                str(part.start),
                str(part.end),
                str(part.sectors),
                format_size(part.size),
                part.type_name or part.type_id,
                _fs_text(part.filesystem),
            )
            for part in table_info.partitions
        ]
        out.table(
            ("Device", "Boot", "Start", "End", "Sectors", "Size", "Type", "Filesystem"),
            rows,
            right=("Start", "End", "Sectors", "Size"),
        )
    elif survey.filesystem is not None:
        out.line(f"{pad}{'filesystem:':<16}{_fs_text(survey.filesystem)} (no partition table)")
    else:
        out.line(f"{pad}{'contents:':<16}no partition table or filesystem recognised")
    if survey.boot is not None:
        out.line(f"{pad}{'boot:':<16}{survey.boot.description}")
        for efi in survey.boot.efi_files:
            out.line(f"{pad}{'':<16}{efi.description}")
        out.line(f"{pad}{'boots under:':<16}{survey.boot.firmware_description}")
