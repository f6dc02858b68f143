"""The registry's data dir: where the catalog, the blobs and the client files live.

``DATA_DIR`` (``--data-dir``, else ``$IMAGEWRIGHT_DATA_DIR``, else ``./imagewright-data``) holds:

- ``catalog.sqlite`` (+ WAL files): the embedded catalog, unless ``--database`` names another.
- ``images/``: the default file store's blobs.
- ``registry.json`` (0600): how the last ``serve`` ran — its database URL (with any password,
  hence 0600), stores and public URL — so that ``imagewright accounts --data-dir DIR`` and
  ``imagewright db upgrade --data-dir DIR`` reach the same catalog without repeating options.
- ``clouds.yaml`` and ``openrc`` (0600): the admin's credentials for OpenStack clients, written
  when the admin account is created (its password is known only then).
- ``serve.lock``: held by the running ``serve`` of an embedded catalog (one server per SQLite file).

Every file here is written atomically through ``imagewright.files``.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from imagewright.catalog.database import Catalog, sqlite_url
from imagewright.errors import ImageIOError, InvalidArgumentError
from imagewright.files import write_file_atomically

DATA_DIR_VARIABLE = "IMAGEWRIGHT_DATA_DIR"
DEFAULT_DATA_DIR = "imagewright-data"
CONFIG_FILE = "registry.json"
CLOUD_NAME = "imagewright"


def resolve_data_dir(option: str | os.PathLike[str] | None) -> Path:
    text = os.fspath(option) if option is not None else os.environ.get(DATA_DIR_VARIABLE) or DEFAULT_DATA_DIR
    return Path(text).expanduser().absolute()


def ensure_data_dir(data_dir: Path) -> None:
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as err:
        raise ImageIOError(f"The data dir {data_dir} cannot be created: {err.strerror}.") from None
    if not os.access(data_dir, os.W_OK | os.X_OK):
        raise ImageIOError(f"The data dir {data_dir} is not writable.")


@dataclass(frozen=True)
class DataDirConfig:
    database_url: str
    store_specs: tuple[str, ...]
    public_url: str


def read_config(data_dir: Path) -> DataDirConfig | None:
    path = data_dir / CONFIG_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return DataDirConfig(
            database_url=str(data["database_url"]),
            store_specs=tuple(str(s) for s in data.get("store_specs", ())),
            public_url=str(data.get("public_url", "")),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ImageIOError(
            f"{path} cannot be read ({err}); remove it and start 'imagewright serve' again."
        ) from None


def write_config(data_dir: Path, config: DataDirConfig) -> None:
    text = json.dumps(
        {
            "database_url": config.database_url,
            "store_specs": list(config.store_specs),
            "public_url": config.public_url,
        },
        indent=2,
    )
    write_file_atomically(data_dir / CONFIG_FILE, text + "\n", mode=0o600, force=True)


def database_url_for(data_dir: Path, database: str | None) -> str:
    """``--database`` if given, else what the data dir's last ``serve`` used, else its SQLite file."""
    if database:
        return database
    recorded = read_config(data_dir)
    if recorded is not None:
        return recorded.database_url
    return sqlite_url(data_dir)


def open_catalog(data_dir_option: str | None, database: str | None) -> Catalog:
    """The catalog the accounts/db commands act on (``--database``, else the data dir's)."""
    if database is None:
        data_dir = resolve_data_dir(data_dir_option)
        if not data_dir.is_dir():
            raise InvalidArgumentError(
                f"There is no data dir {data_dir}; start 'imagewright serve --data-dir {data_dir}' once, "
                "or name the catalog with --database."
            )
        return Catalog(database_url_for(data_dir, None))
    return Catalog(database)


class DataDirLock:
    """An exclusive lock on ``DATA_DIR/serve.lock`` (released when the process ends, even by SIGKILL)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "serve.lock"
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the process's life
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise InvalidArgumentError(
                f"Another 'imagewright serve' is running on {self.path.parent} (it holds {self.path.name})."
            ) from None
        self._file = handle


def clouds_yaml(auth_url: str, username: str, password: str, project: str, region: str) -> str:
    # JSON strings are valid YAML double-quoted scalars: every value is quoted safely.
    def q(value: str) -> str:
        return json.dumps(value)

    return (
        "# Written by imagewright serve: the registry's admin credentials for OpenStack clients.\n"
        f"#   OS_CLIENT_CONFIG_FILE=<this file> OS_CLOUD={CLOUD_NAME} openstack image list\n"
        "clouds:\n"
        f"  {CLOUD_NAME}:\n"
        "    auth:\n"
        f"      auth_url: {q(auth_url)}\n"
        f"      username: {q(username)}\n"
        f"      password: {q(password)}\n"
        f"      project_name: {q(project)}\n"
        '      user_domain_name: "Default"\n'
        '      project_domain_name: "Default"\n'
        f"    region_name: {q(region)}\n"
        '    interface: "public"\n'
        '    identity_api_version: "3"\n'
        '    image_api_version: "2"\n'
    )


def openrc(auth_url: str, username: str, password: str, project: str, region: str) -> str:
    lines = {
        "OS_AUTH_URL": auth_url,
        "OS_USERNAME": username,
        "OS_PASSWORD": password,
        "OS_PROJECT_NAME": project,
        "OS_USER_DOMAIN_NAME": "Default",
        "OS_PROJECT_DOMAIN_NAME": "Default",
        "OS_REGION_NAME": region,
        "OS_INTERFACE": "public",
        "OS_IDENTITY_API_VERSION": "3",
        "OS_IMAGE_API_VERSION": "2",
    }
    body = "".join(f"export {key}={shlex.quote(value)}\n" for key, value in lines.items())
    return "# Written by imagewright serve: source it, then run openstack image list.\n" + body


def write_client_files(
    data_dir: Path, public_url: str, username: str, password: str, project: str, region: str
) -> tuple[Path, Path]:
    auth_url = f"{public_url.rstrip('/')}/identity/v3"
    clouds = data_dir / "clouds.yaml"
    rc = data_dir / "openrc"
    write_file_atomically(
        clouds, clouds_yaml(auth_url, username, password, project, region), mode=0o600, force=True
    )
    write_file_atomically(rc, openrc(auth_url, username, password, project, region), mode=0o600, force=True)
    return clouds, rc
