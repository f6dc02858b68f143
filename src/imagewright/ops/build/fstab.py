"""/etc/fstab of a built disk: the root filesystem and the swap partition by UUID.

Lines of the source's own fstab stay, except those for ``/`` and for swap: a flat EC2 image
typically mounts ``/dev/sda1`` or ``LABEL=cloudimg-rootfs`` on ``/`` and ``/dev/sda3`` as swap,
which name devices the built disk does not have. Comments and everything else (``/proc``, a
``tmpfs``, network mounts) are kept as they are, in order, after a comment that says what changed.
"""

from __future__ import annotations

ROOT_OPTIONS = "errors=remount-ro"


def _is_replaced(line: str) -> bool:
    fields = line.split()
    if len(fields) < 3 or fields[0].startswith("#"):
        return False
    return fields[1] == "/" or fields[2] == "swap"


def merge_fstab(existing: str | None, *, root_uuid: str, root_type: str, swap_uuid: str | None) -> str:
    """The new /etc/fstab text: the kept lines of ``existing``, then root and swap by UUID."""
    kept = [line for line in (existing or "").splitlines() if not _is_replaced(line)]
    while kept and not kept[-1].strip():
        kept.pop()
    lines = kept + ([""] if kept else [])
    lines += [
        "# Root filesystem and swap of the disk imagewright built (by filesystem UUID).",
        f"UUID={root_uuid}\t/\t{root_type}\t{ROOT_OPTIONS}\t0\t1",
    ]
    if swap_uuid is not None:
        lines.append(f"UUID={swap_uuid}\tnone\tswap\tsw\t0\t0")
    return "\n".join(lines) + "\n"
