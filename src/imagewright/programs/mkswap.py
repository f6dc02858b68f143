"""mkswap (Debian ``util-linux``): a swap signature with a label and a UUID.

Run on a scratch *file* the size of the swap partition, never on the image: mkswap writes only
its first page (the header with version, size, label and UUID, and the "SWAPSPACE2" magic at
the end of the page), so the caller copies that page into the partition. ``--pagesize 4096``
makes the signature an x86-64 guest's kernel accepts whatever the host's page size is (the
magic sits at the end of the first *page*; a 64 KiB-page host would put it elsewhere).
"""

from __future__ import annotations

import os
import re

from imagewright.errors import InvalidArgumentError
from imagewright.programs.runner import run_program

#: The page size of the guests imagewright builds for (x86-64).
GUEST_PAGE_SIZE = 4096
#: mkswap refuses fewer than 10 pages.
MIN_SWAP_BYTES = 10 * GUEST_PAGE_SIZE
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def mkswap(
    target: str | os.PathLike[str],
    *,
    label: str | None = None,
    uuid: str | None = None,
    page_size: int = GUEST_PAGE_SIZE,
) -> None:
    """``mkswap --quiet --pagesize N [-L LABEL] [-U UUID] TARGET`` on a file or device."""
    argv = ["mkswap", "--quiet", "--pagesize", str(page_size)]
    if label is not None:
        # The header keeps 16 bytes for the label (util-linux include/swapheader.h).
        if len(label.encode("utf-8")) > 16 or "\0" in label:
            raise InvalidArgumentError("A swap label holds at most 16 bytes and no NUL.")
        argv += ["--label", label]
    if uuid is not None:
        if not _UUID.match(uuid):
            raise InvalidArgumentError(f"'{uuid}' is not a UUID.")
        argv += ["--uuid", uuid]
    argv.append(os.path.abspath(os.fspath(target)))
    run_program(argv, timeout=300.0, what="writing the swap signature")
