"""ISO 9660 media in pure Python (pycdlib), always with Rock Ridge and Joliet.

Why both extensions (ECMA-119 §7.5-7.6 allows only ``A-Z 0-9 _`` in names): a plain ISO 9660
tree stores ``meta-data`` as ``META_DAT.;1`` and Linux shows it as ``meta_dat.``, so no guest
finds its files. Rock Ridge (RRIP 1.09, ``NM`` entries) carries the real POSIX name for Linux
and the BSDs; Joliet (UCS-2 supplementary volume descriptor, escape ``%/E``) carries it for
Windows and for readers without Rock Ridge. Nova builds its config drive the same way
(``genisoimage -J -r``) and cloud-init's NoCloud docs use ``-joliet -rock``.

The primary volume identifier is the label as given, lower case included: ECMA-119 asks for
d-characters, but genisoimage, xorriso and nova all store ``cidata``/``config-2`` verbatim and
libblkid reports it verbatim, which is what guests match on. The Joliet volume identifier
carries the same text, so blkid (which prefers the Joliet label) reports the same LABEL.

The ISO 9660 names themselves are interchange level 3 (up to 30 d-characters with a ``.``
and ``;1``), made unique per directory: they are a fallback nobody should need to read.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pycdlib

from imagewright.errors import ContextError
from imagewright.metadata.layout import MediumLayout

INTERCHANGE_LEVEL = 3
#: ECMA-119 §7.5.1: a file identifier (name + ``.`` + extension) holds at most 30 characters.
_MAX_FILE_ID = 30
#: ECMA-119 §7.6.3: a directory identifier holds at most 31 characters.
_MAX_DIR_ID = 31
#: Joliet names are limited to 64 UCS-2 characters.
_MAX_JOLIET_NAME = 64
#: ISO 9660 volume identifiers are 32 bytes; Joliet's are 16 UCS-2 characters.
MAX_LABEL_LENGTH = 16

_NOT_D_CHARACTER = re.compile(r"[^A-Z0-9_]")


def write_iso9660(layout: MediumLayout, destination: Path) -> None:
    """Write ``layout`` as an ISO 9660 image with Rock Ridge and Joliet to ``destination``."""
    if layout.filesystem != "iso9660":
        raise ContextError(f"The {layout.kind} medium is not an ISO 9660 medium.")
    label = layout.label
    if not label or len(label) > MAX_LABEL_LENGTH or not label.isascii() or not label.isprintable():
        raise ContextError(f"'{label}' cannot be an ISO 9660 volume label.")
    for path in layout.file_paths + layout.all_directories():
        name = path.rsplit("/", 1)[-1]
        if len(name) > _MAX_JOLIET_NAME:
            raise ContextError(
                f"The name '{name}' is longer than the {_MAX_JOLIET_NAME} characters Joliet allows."
            )
    iso_paths = _iso_paths(layout)
    iso = pycdlib.PyCdlib()
    try:
        iso.new(
            interchange_level=INTERCHANGE_LEVEL,
            vol_ident=label,
            joliet=3,
            rock_ridge="1.09",
        )
        for directory in layout.all_directories():
            iso.add_directory(
                iso_paths[directory],
                rr_name=directory.rsplit("/", 1)[-1],
                joliet_path="/" + directory,
            )
        for item in layout.files:
            iso.add_fp(
                io.BytesIO(item.data),
                len(item.data),
                iso_paths[item.path],
                rr_name=item.path.rsplit("/", 1)[-1],
                joliet_path="/" + item.path,
            )
        with destination.open("wb") as out:
            iso.write_fp(out)
    except OSError as err:
        raise ContextError(
            f"The ISO image '{destination}' could not be written: {err.strerror or err}."
        ) from None
    except Exception as err:  # noqa: BLE001 - pycdlib raises its own and built-in types; one sentence out
        raise ContextError(f"The ISO image could not be built: {err}.") from None
    finally:
        # Closing a half-built image must not hide the first error.
        with contextlib.suppress(Exception):
            iso.close()


def _iso_paths(layout: MediumLayout) -> dict[str, str]:
    """Medium path → ISO 9660 path (``/OPENSTACK/LATEST/META_DATA.JSON;1``), unique per directory."""
    mapping: dict[str, str] = {"": ""}
    used: dict[str, set[str]] = {}
    entries = [(d, True) for d in layout.all_directories()] + [(f.path, False) for f in layout.files]
    for path, is_dir in entries:
        parent, _, name = path.rpartition("/")
        taken = used.setdefault(parent, set())
        iso_name = _unique_iso_name(name, is_dir, taken)
        taken.add(iso_name)
        suffix = "" if is_dir else ";1"
        mapping[path] = f"{mapping[parent]}/{iso_name}{suffix}"
    return mapping


def _unique_iso_name(name: str, is_dir: bool, taken: set[str]) -> str:
    if is_dir:
        stem, ext = _d_characters(name), ""
        limit = _MAX_DIR_ID
    else:
        base, dot, extension = name.rpartition(".")
        if not dot or not base:
            base, extension = name, ""
        stem, ext = _d_characters(base), _d_characters(extension)[:8]
        limit = _MAX_FILE_ID - 1 - len(ext)
    stem = (stem or "_")[:limit]
    candidate = stem
    counter = 1
    while _joined(candidate, ext, is_dir) in taken:
        tail = f"_{counter}"
        candidate = stem[: limit - len(tail)] + tail
        counter += 1
    return _joined(candidate, ext, is_dir)


def _joined(stem: str, ext: str, is_dir: bool) -> str:
    return stem if is_dir else f"{stem}.{ext}"


def _d_characters(text: str) -> str:
    return _NOT_D_CHARACTER.sub("_", text.upper())
