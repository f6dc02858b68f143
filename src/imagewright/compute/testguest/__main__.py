"""``python -m imagewright.compute.testguest --output DIR [--tar FILE.tar.gz] [--flat-ext4 FILE]``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from imagewright.compute.testguest import build_testguest_rootfs, flat_ext4, rootfs_tarball
from imagewright.errors import ImagewrightError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m imagewright.compute.testguest",
        description=(
            "Build the imagewright test guest (Debian kernel + busybox) as a root filesystem tree, "
            "and optionally as a rootfs tarball and a flat ext4 image. The kernel is downloaded "
            "once and cached under ${IMAGEWRIGHT_CACHE:-~/.cache/imagewright}/testguest/."
        ),
    )
    parser.add_argument(
        "--output", required=True, type=Path, help="directory to build the tree in (absent or empty)"
    )
    parser.add_argument(
        "--tar", type=Path, help="also write the tree as this .tar.gz (members owned by root)"
    )
    parser.add_argument("--flat-ext4", type=Path, help="also write the tree as this unpartitioned ext4 image")
    parser.add_argument(
        "--cache-dir", type=Path, help="cache directory (default: $IMAGEWRIGHT_CACHE or ~/.cache/imagewright)"
    )
    args = parser.parse_args(argv)
    try:
        start = time.monotonic()
        guest = build_testguest_rootfs(args.output, cache_dir=args.cache_dir)
        print(f"rootfs: {guest.root} (kernel {guest.kernel_version}) in {time.monotonic() - start:.1f} s")
        if args.tar:
            start = time.monotonic()
            rootfs_tarball(guest.root, args.tar)
            print(f"tarball: {args.tar} in {time.monotonic() - start:.1f} s")
        if args.flat_ext4:
            start = time.monotonic()
            image = flat_ext4(guest.root, args.flat_ext4)
            print(f"flat ext4: {image.path} (UUID {image.uuid}) in {time.monotonic() - start:.1f} s")
    except ImagewrightError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
