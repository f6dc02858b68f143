"""Recipes: a distribution build described in one small TOML file (``build --recipe web.toml``).

Schema (every field but ``release`` is optional; relative paths are relative to the recipe)::

    release = "debian:bookworm"         # VENDOR:CODENAME (debian:…, ubuntu:…)
    variant = "minbase"                 # minbase | important | standard
    packages = ["nginx", "curl"]        # more packages
    context = "cloud-init"              # cloud-init | agent | none (default none)
    kernel = "cloud"                    # cloud | generic
    mirror = "http://mirror.example.org/debian"
    snapshot = "20250520T000000Z"       # the archive as it was then
    source_date_epoch = 1700000000      # reproducible file times
    append = "net.ifnames=0"            # more kernel parameters
    commands = [                        # run inside the target after every package, in order
      "systemctl enable nginx",
    ]
    outputs = ["web.qcow2", "web.vmdk"] # the first is built; the others are converted from it
                                        # (default: the recipe's name with .qcow2)

    [disk]
    size = "4G"                         # or a number of bytes
    swap = "512M"
    table = "gpt"                       # mbr | gpt (default: gpt; mbr with firmware = "bios")
    firmware = "hybrid"                 # hybrid | bios | uefi (default: hybrid)

    [[files]]                           # copied in before the commands run
    source = "nginx.conf"
    destination = "/etc/nginx/sites-available/default"
    mode = "0644"                       # octal text or a number (default 0644)

A recipe that does not fit gets one sentence naming the field and what it must be
(``web.toml: packages must be a list of package names, not a string``); an unknown field is
named too, so a misspelt one is not silently ignored. Command-line options override the
recipe's values (``-o`` replaces ``outputs``).

Source: TOML 1.0 (https://toml.io/en/v1.0.0), read with Python's ``tomllib``.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagewright.errors import InvalidArgumentError
from imagewright.ops.build.distro.plan import CONTEXTS, FileToCopy
from imagewright.ops.build.distro.release import KERNEL_FLAVOURS
from imagewright.programs.mmdebstrap import VARIANTS
from imagewright.units import parse_size

#: A recipe is a page of text, not a payload.
MAX_RECIPE_BYTES = 1 << 20
TOP_FIELDS = (
    "release", "variant", "packages", "context", "kernel", "mirror", "snapshot",
    "source_date_epoch", "append", "commands", "outputs", "disk", "files",
)  # fmt: skip
DISK_FIELDS = ("size", "swap", "table", "firmware")
FILE_FIELDS = ("source", "destination", "mode")


@dataclass(frozen=True)
class RecipeOutput:
    path: Path
    #: None: from the name.
    format: str | None = None


@dataclass(frozen=True)
class Recipe:
    release: str
    variant: str = "minbase"
    packages: tuple[str, ...] = ()
    context: str = "none"
    kernel: str = "cloud"
    mirror: str | None = None
    snapshot: str | None = None
    source_date_epoch: int | None = None
    append: str = ""
    commands: tuple[str, ...] = ()
    output_paths: tuple[Path, ...] = ()
    output_format: str | None = None
    size: int | None = None
    swap: int = 0
    table: str | None = None
    firmware: str | None = None
    files: tuple[FileToCopy, ...] = ()
    #: Where the recipe file is (None for a recipe made from options).
    path: Path | None = None

    def overridden(
        self,
        *,
        release: str | None = None,
        output: Path | None = None,
        size: int | None = None,
        swap: int | None = None,
        table: str | None = None,
        firmware: str | None = None,
        append: str | None = None,
        output_format: str | None = None,
        variant: str | None = None,
        packages: Sequence[str] = (),
        context: str | None = None,
        kernel: str | None = None,
        mirror: str | None = None,
        snapshot: str | None = None,
    ) -> Recipe:
        """This recipe with the values given on the command line in place of its own."""
        changes: dict[str, Any] = {}
        given = {
            "release": release, "size": size, "swap": swap, "table": table, "firmware": firmware,
            "append": append,
            "output_format": output_format, "variant": variant, "context": context, "kernel": kernel,
            "mirror": mirror, "snapshot": snapshot,
        }  # fmt: skip
        changes.update({key: value for key, value in given.items() if value is not None})
        if output is not None:
            changes["output_paths"] = (output,)
        if packages:
            names = [n for value in packages for n in value.replace(",", " ").split()]
            changes["packages"] = tuple(dict.fromkeys([*self.packages, *names]))
        recipe = dataclasses.replace(self, **changes)
        if not recipe.release:
            raise InvalidArgumentError("Give --from RELEASE (such as debian:bookworm) or --recipe FILE.")
        return recipe

    def outputs(self) -> list[RecipeOutput]:
        if self.output_paths:
            first, *rest = self.output_paths
            return [RecipeOutput(first, self.output_format), *(RecipeOutput(p) for p in rest)]
        if self.path is not None:
            return [RecipeOutput(self.path.with_suffix(".qcow2"), self.output_format)]
        raise InvalidArgumentError("Give -o OUT, the image to write.")


class _Fields:
    """Typed reads of one table of the recipe, each failure one sentence naming the field."""

    def __init__(self, name: str, table: dict[str, Any], allowed: Sequence[str], prefix: str = "") -> None:
        self.name = name
        self.table = table
        self.prefix = prefix
        for key in table:
            if key not in allowed:
                raise self.error(
                    key, f"is not a recipe field; the fields{' of ' + prefix.rstrip('.') if prefix else ''} "
                    f"are {', '.join(allowed)}",
                )  # fmt: skip

    def error(self, key: str, text: str) -> InvalidArgumentError:
        return InvalidArgumentError(f"{self.name}: {self.prefix}{key} {text}.")

    def text(self, key: str, choices: Sequence[str] | None = None) -> str | None:
        value = self.table.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"must be a text, not {_describe(value)}")
        if choices is not None and value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}, not '{value}'")
        return value

    def texts(self, key: str) -> tuple[str, ...]:
        value = self.table.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise self.error(key, f"must be a list of texts, not {_describe(value)}")
        return tuple(value)

    def size(self, key: str) -> int | None:
        value = self.table.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise self.error(key, f'must be a size such as "4G" or a number of bytes, not {_describe(value)}')
        if isinstance(value, int):
            if value < 0:
                raise self.error(key, "cannot be negative")
            return value
        try:
            return parse_size(value)
        except InvalidArgumentError:
            raise self.error(key, f"must be a size such as \"4G\", not '{value}'") from None

    def integer(self, key: str) -> int | None:
        value = self.table.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.error(key, f"must be a whole number of seconds, not {_describe(value)}")
        return value


def _describe(value: Any) -> str:
    kinds = {
        str: "a text",
        int: "a number",
        float: "a number",
        bool: "true/false",
        list: "a list",
        dict: "a table",
    }
    kind = kinds.get(type(value), type(value).__name__)
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return f"{kind} ({value!r})"
    return kind


def load_recipe(path: Path) -> Recipe:
    """Read and check the recipe at ``path``; InvalidArgumentError (one sentence) when it does not fit."""
    name = path.name
    try:
        with path.open("rb") as f:
            data = f.read(MAX_RECIPE_BYTES + 1)
    except OSError as err:
        raise InvalidArgumentError(f"The recipe {path} cannot be read: {err.strerror}.") from None
    if len(data) > MAX_RECIPE_BYTES:
        raise InvalidArgumentError(
            f"{name} is larger than {MAX_RECIPE_BYTES >> 20} MiB; a recipe is a page of text."
        )
    try:
        document = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidArgumentError(f"{name} is not UTF-8 text; a recipe is a TOML file.") from None
    except tomllib.TOMLDecodeError as err:
        raise InvalidArgumentError(f"{name} is not valid TOML: {err}.") from None
    top = _Fields(name, document, TOP_FIELDS)
    release = top.text("release")
    if release is None:
        raise top.error("release", 'is missing; name the release, such as release = "debian:bookworm"')
    base = path.parent
    disk_table = document.get("disk", {})
    if not isinstance(disk_table, dict):
        raise top.error("disk", f"must be a table ([disk]), not {_describe(disk_table)}")
    disk = _Fields(name, disk_table, DISK_FIELDS, "disk.")
    files_list = document.get("files", [])
    if not isinstance(files_list, list) or not all(isinstance(item, dict) for item in files_list):
        raise top.error("files", "must be an array of tables ([[files]] with source and destination)")
    files: list[FileToCopy] = []
    for number, item in enumerate(files_list, start=1):
        entry = _Fields(name, item, FILE_FIELDS, f"files[{number}].")
        source = entry.text("source")
        destination = entry.text("destination")
        if source is None:
            raise entry.error("source", "is missing; name the file to copy")
        if destination is None or not destination.startswith("/"):
            raise entry.error("destination", "must be an absolute path inside the image, such as /etc/motd")
        files.append(FileToCopy(base / source, destination, _mode(entry, item.get("mode"))))
    epoch = top.integer("source_date_epoch")
    return Recipe(
        release=release,
        variant=top.text("variant", VARIANTS) or "minbase",
        packages=top.texts("packages"),
        context=top.text("context", CONTEXTS) or "none",
        kernel=top.text("kernel", KERNEL_FLAVOURS) or "cloud",
        mirror=top.text("mirror"),
        snapshot=top.text("snapshot"),
        source_date_epoch=epoch,
        append=top.text("append") or "",
        commands=top.texts("commands"),
        output_paths=tuple(base / p for p in top.texts("outputs")),
        size=disk.size("size"),
        swap=disk.size("swap") or 0,
        table=disk.text("table", ("mbr", "gpt")),
        firmware=disk.text("firmware", ("hybrid", "bios", "uefi")),
        files=tuple(files),
        path=path,
    )


def _mode(entry: _Fields, value: Any) -> int:
    if value is None:
        return 0o644
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0o7777:
        return value
    if isinstance(value, str):
        try:
            mode = int(value, 8)
        except ValueError:
            mode = -1
        if 0 <= mode <= 0o7777:
            return mode
    raise entry.error("mode", f'must be an octal mode such as "0644", not {_describe(value)}')
