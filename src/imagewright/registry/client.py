"""The Image API v2, as a client, over an openstacksdk session (see the package docstring)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagewright.binary import FileSource
from imagewright.errors import CloudError, ImagewrightError, InvalidArgumentError
from imagewright.files import AtomicOutput
from imagewright.upload_gate import judge_upload

if TYPE_CHECKING:
    import requests
    from openstack.connection import Connection

#: ``progress(done_bytes, total_bytes)``.
ByteProgress = Callable[[int, int | None], None]
#: ``progress(stage, done, total)`` of a conversion (``ops.convert.Progress``).
StageProgress = Callable[[str, int, int | None], None]

CHUNK = 1 << 20
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_HEX_ID = re.compile(r"^[0-9a-fA-F]{32}$")


@dataclass
class Cloud:
    """An authenticated connection to a cloud (openstacksdk's ``Connection``) and its name."""

    connection: Connection
    name: str

    @property
    def project_id(self) -> str | None:
        project: str | None = self.connection.current_project_id
        return project


def connect(cloud: str | None = None, clouds_file: str | os.PathLike[str] | None = None) -> Cloud:
    """Authenticate as ``clouds.yaml`` (``clouds_file``, else openstacksdk's search path and
    ``$OS_CLIENT_CONFIG_FILE``) says for ``cloud`` (else ``$OS_CLOUD``, else the ``OS_*``
    variables of an openrc)."""
    import keystoneauth1.exceptions
    import openstack.config
    import openstack.connection
    import openstack.exceptions

    name = cloud or os.environ.get("OS_CLOUD") or None
    try:
        files = [os.fspath(clouds_file)] if clouds_file is not None else None
        if files is not None and not Path(files[0]).is_file():
            raise CloudError(f"There is no clouds file {files[0]}.")
        config = (
            openstack.config.OpenStackConfig(config_files=files)
            if files
            else openstack.config.OpenStackConfig()
        )
        region = config.get_one(cloud=name)
        connection = openstack.connection.Connection(config=region)
        connection.authorize()
    except CloudError:
        raise
    except openstack.exceptions.ConfigException as err:
        raise CloudError(
            f"The cloud {name or '(from OS_* variables)'} is not configured: {_first_line(err)}."
        ) from None
    except keystoneauth1.exceptions.Unauthorized:
        raise CloudError(f"The cloud {name or 'from the OS_* variables'} refused the credentials.") from None
    except keystoneauth1.exceptions.ConnectFailure as err:
        raise CloudError(
            f"The identity service of {name or 'the cloud'} cannot be reached: {_first_line(err)}."
        ) from None
    except (keystoneauth1.exceptions.ClientException, openstack.exceptions.SDKException) as err:
        raise CloudError(f"Connecting to {name or 'the cloud'} failed: {_first_line(err)}.") from None
    return Cloud(connection, name or "(OS_* variables)")


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0].rstrip(".")


# --- raw Image API calls ----------------------------------------------------------------------


def _request(
    cloud: Cloud, method: str, url: str, *, ok: tuple[int, ...], what: str, **kwargs: Any
) -> requests.Response:
    """One Image API request through the session; CloudError with the service's sentence otherwise."""
    import keystoneauth1.exceptions

    try:
        response = cloud.connection.image.request(url, method, raise_exc=False, **kwargs)
    except keystoneauth1.exceptions.ConnectFailure as err:
        raise CloudError(
            f"The image service of {cloud.name} cannot be reached while {what}: {_first_line(err)}."
        ) from None
    except keystoneauth1.exceptions.ClientException as err:
        raise CloudError(f"{what.capitalize()} failed: {_first_line(err)}.") from None
    if response.status_code not in ok:
        raise CloudError(f"{what.capitalize()} failed: {_service_message(response)}")
    return response


def _service_message(response: requests.Response) -> str:
    message = ""
    try:
        body = response.json()
        if isinstance(body, dict):
            message = str(body.get("message") or body.get("error", {}).get("message") or "")
    except ValueError:
        # Glance answers some errors as HTML/plain text: keep its last meaningful line.
        lines = [
            line.strip() for line in re.sub(r"<[^>]+>", "\n", response.text).splitlines() if line.strip()
        ]
        message = lines[-1] if lines else ""
    message = " ".join(message.split()) or response.reason or "no reason given"
    text = f"{response.status_code} {message}"
    return text if text.endswith((".", "!", "?")) else text + "."


def find_image(cloud: Cloud, ref: str) -> dict[str, Any]:
    """The image with id ``ref``, or the one image named ``ref``."""
    if _UUID.match(ref):
        response = _request(cloud, "GET", f"/images/{ref}", ok=(200, 404), what=f"looking up the image {ref}")
        if response.status_code == 200:
            return dict(response.json())
    found = [image for image in list_images(cloud, name=ref)]
    if not found:
        raise CloudError(f"There is no image {ref!r} in {cloud.name} (by id or name).")
    if len(found) > 1:
        raise CloudError(f"{len(found)} images are named {ref!r} in {cloud.name}; use the id.")
    return found[0]


def list_images(
    cloud: Cloud,
    *,
    name: str | None = None,
    visibility: str | None = None,
    status: str | None = None,
    tags: tuple[str, ...] = (),
    properties: dict[str, str] | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Every image the caller sees that matches (all pages, Glance's ``next`` links)."""
    params: list[tuple[str, str]] = [("limit", str(min(limit or 200, 200)))]
    for key, value in (("name", name), ("visibility", visibility), ("status", status)):
        if value is not None:
            params.append((key, value))
    params += [("tag", tag) for tag in tags]
    params += sorted((properties or {}).items())
    images: list[dict[str, Any]] = []
    url = "/images"
    while True:
        page = _request(cloud, "GET", url, ok=(200,), what="listing images", params=params).json()
        images += page.get("images", [])
        following = page.get("next")
        if not following or (limit is not None and len(images) >= limit):
            return images[:limit] if limit is not None else images
        # ``next`` is "/v2/images?…": keep its query, relative to the versioned endpoint.
        url, params = "/images?" + following.split("?", 1)[1], []


def delete_image(cloud: Cloud, ref: str) -> dict[str, Any]:
    image = find_image(cloud, ref)
    _request(cloud, "DELETE", f"/images/{image['id']}", ok=(204,), what=f"deleting the image {image['id']}")
    return image


def _project_id(cloud: Cloud, project: str) -> str:
    """A project id: ``project`` itself when it looks like one, else looked up by name."""
    if _HEX_ID.match(project):
        return project
    import openstack.exceptions

    try:
        identity: Any = cloud.connection.identity
        found = identity.find_project(project, ignore_missing=True)
    except openstack.exceptions.SDKException:
        found = None
    if found is None:
        raise CloudError(
            f"The project {project!r} cannot be found in {cloud.name} (listing projects may need an "
            "admin); give its id."
        )
    return str(found.id)


def share_image(cloud: Cloud, ref: str, project: str) -> dict[str, Any]:
    """Add ``project`` (id or name) as a member of the image; returns the membership (``pending``)."""
    image = find_image(cloud, ref)
    member = _project_id(cloud, project)
    response = _request(
        cloud,
        "POST",
        f"/images/{image['id']}/members",
        ok=(200,),
        what=f"sharing the image {image['id']} with {project}",
        json={"member": member},
    )
    return dict(response.json())


def unshare_image(cloud: Cloud, ref: str, project: str) -> dict[str, Any]:
    image = find_image(cloud, ref)
    member = _project_id(cloud, project)
    _request(
        cloud,
        "DELETE",
        f"/images/{image['id']}/members/{member}",
        ok=(204,),
        what=f"removing {project} from the members of {image['id']}",
    )
    return {"image_id": image["id"], "member_id": member, "status": "removed"}


# --- upload -----------------------------------------------------------------------------------


@dataclass
class UploadResult:
    id: str
    name: str
    cloud: str
    file: str
    disk_format: str
    container_format: str
    size: int
    virtual_size: int | None
    checksum: str
    os_hash_algo: str
    os_hash_value: str
    status: str
    #: The format the file was converted from (None: sent as it was).
    converted_from: str | None
    seconds: float
    properties: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _HashingReader:
    """A file read front to back in 1 MiB chunks, hashed (md5 + sha512) as it goes, with progress.

    What ``requests`` sends as the body: it has a length (so Content-Length is sent, not chunks)
    and ``read``; the hashes are of exactly the bytes that left.
    """

    def __init__(self, path: Path, progress: ByteProgress | None) -> None:
        self._file = path.open("rb")
        self.size = os.fstat(self._file.fileno()).st_size
        self.sent = 0
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sha512 = hashlib.sha512()
        self._progress = progress

    def __len__(self) -> int:
        return self.size

    def read(self, amount: int = -1) -> bytes:
        data = self._file.read(CHUNK if amount is None or amount < 0 else max(amount, CHUNK))
        if data:
            self.md5.update(data)
            self.sha512.update(data)
            self.sent += len(data)
            if self._progress is not None:
                self._progress(self.sent, self.size)
        return data

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(CHUNK):
            yield chunk

    def close(self) -> None:
        self._file.close()


def _convert(
    path: Path, fmt: str, directory: Path, name: str, progress: StageProgress | None
) -> tuple[Path, str]:
    from imagewright.ops.convert import convert

    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:80] or "image"
    target = directory / f"{safe}.{'vhd' if fmt == 'vpc' else fmt}"
    result = convert(path, target, output_format=fmt, checksums=(), progress=progress)
    return target, result.source_format


def upload_image(
    cloud: Cloud,
    path: str | os.PathLike[str],
    *,
    name: str,
    visibility: str | None = None,
    properties: dict[str, str] | None = None,
    tags: tuple[str, ...] = (),
    convert_to: str | None = None,
    disk_format: str | None = None,
    container_format: str | None = None,
    store: str | None = None,
    min_disk: int | None = None,
    min_ram: int | None = None,
    scratch_dir: str | os.PathLike[str] | None = None,
    progress: ByteProgress | None = None,
    convert_progress: StageProgress | None = None,
) -> UploadResult:
    """Judge, (convert,) create, send, verify; see the package docstring. Nothing is left behind
    on failure: the scratch copy goes, and so does the image it created in the cloud."""
    started = time.monotonic()
    source = Path(path)
    if not source.is_file():
        raise InvalidArgumentError(f"{source} is not a file.")
    with tempfile.TemporaryDirectory(prefix="iw-upload-", dir=scratch_dir) as scratch:
        converted_from = None
        to_send = source
        if convert_to is not None:
            to_send, converted_from = _convert(source, convert_to, Path(scratch), name, convert_progress)
        with FileSource(str(to_send)) as src:
            judged = judge_upload(src, str(source), disk_format, container_format)
        body: dict[str, Any] = {
            "name": name,
            "disk_format": judged.disk_format,
            "container_format": judged.container_format,
            **(properties or {}),
        }
        if visibility is not None:
            body["visibility"] = visibility
        if tags:
            body["tags"] = list(dict.fromkeys(tags))
        if min_disk is not None:
            body["min_disk"] = min_disk
        if min_ram is not None:
            body["min_ram"] = min_ram
        created = _request(
            cloud, "POST", "/images", ok=(201,), what=f"creating the image {name!r}", json=body
        ).json()
        image_id = created["id"]
        try:
            shown = _send(cloud, image_id, to_send, store, progress)
        except BaseException:
            _forget(cloud, image_id)
            raise
    return UploadResult(
        id=image_id,
        name=name,
        cloud=cloud.name,
        file=str(source),
        disk_format=judged.disk_format,
        container_format=judged.container_format,
        size=int(shown["size"]),
        virtual_size=shown.get("virtual_size"),
        checksum=str(shown["checksum"]),
        os_hash_algo=str(shown.get("os_hash_algo") or ""),
        os_hash_value=str(shown.get("os_hash_value") or ""),
        status=str(shown["status"]),
        converted_from=converted_from,
        seconds=time.monotonic() - started,
        properties=dict(properties or {}),
    )


def _send(
    cloud: Cloud, image_id: str, path: Path, store: str | None, progress: ByteProgress | None
) -> dict[str, Any]:
    reader = _HashingReader(path, progress)
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(reader.size)}
    if store is not None:
        headers["X-Image-Meta-Store"] = store
    try:
        _request(
            cloud,
            "PUT",
            f"/images/{image_id}/file",
            ok=(204, 201, 200),
            what=f"uploading {path.name}",
            data=reader,
            headers=headers,
        )
    finally:
        reader.close()
    if reader.sent != reader.size:
        raise CloudError(f"Only {reader.sent} of the {reader.size} bytes of {path.name} were sent.")
    shown = dict(_request(cloud, "GET", f"/images/{image_id}", ok=(200,), what="checking the upload").json())
    expected = {"checksum": reader.md5.hexdigest(), "size": reader.size}
    if shown.get("os_hash_algo") == "sha512":
        expected["os_hash_value"] = reader.sha512.hexdigest()
    for key, value in expected.items():
        if shown.get(key) != value:
            raise CloudError(
                f"The cloud reports {key} {shown.get(key)!r} for the upload of {path.name}, but the bytes "
                f"sent have {value!r}; the image was deleted."
            )
    if shown.get("status") != "active":
        raise CloudError(f"The image is {shown.get('status')} after the upload, not active; it was deleted.")
    return shown


def _forget(cloud: Cloud, image_id: str) -> None:
    """Delete an image whose upload failed (best effort: the failure being reported matters more)."""
    with contextlib.suppress(ImagewrightError):
        _request(cloud, "DELETE", f"/images/{image_id}", ok=(204, 404), what=f"deleting the image {image_id}")


# --- download ---------------------------------------------------------------------------------


@dataclass
class DownloadResult:
    id: str
    name: str | None
    file: str
    size: int
    checksum: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def download_image(
    cloud: Cloud,
    ref: str,
    target: str | os.PathLike[str],
    *,
    force: bool = False,
    progress: ByteProgress | None = None,
) -> DownloadResult:
    """Stream the image's data into ``target`` (appearing only when complete and checked)."""
    started = time.monotonic()
    image = find_image(cloud, ref)
    if image.get("status") != "active":
        raise CloudError(
            f"The image {image['id']} is {image.get('status')}; only active images have data to download."
        )
    expected_md5 = image.get("checksum")
    total = image.get("size")
    md5 = hashlib.md5(usedforsecurity=False)
    received = 0
    with AtomicOutput(Path(target), force=force) as out:
        response = _request(
            cloud,
            "GET",
            f"/images/{image['id']}/file",
            ok=(200,),
            what=f"downloading {image['id']}",
            stream=True,
        )
        try:
            with out.path.open("wb") as handle:
                for chunk in response.iter_content(CHUNK):
                    handle.write(chunk)
                    md5.update(chunk)
                    received += len(chunk)
                    if progress is not None:
                        progress(received, total)
        finally:
            response.close()
        digest = md5.hexdigest()
        announced = response.headers.get("Content-MD5")
        for what, value in (("checksum", expected_md5), ("Content-MD5", announced)):
            if value and value != digest:
                raise CloudError(
                    f"The data of {image['id']} has md5 {digest}, not its {what} {value}; nothing was saved."
                )
        if total is not None and received != total:
            raise CloudError(
                f"The download of {image['id']} ended after {received} of {total} bytes; nothing was saved."
            )
        out.commit()
    return DownloadResult(
        image["id"], image.get("name"), str(target), received, digest, time.monotonic() - started
    )
