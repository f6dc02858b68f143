"""``imagewright image``: images in any Glance-compatible cloud (``imagewright.registry``),
``import URL`` (a ``web-download`` import, CloudStack style: Image API v2.6 interoperable import,
so any Glance that enables web-download works, ours included), and ``register-local`` for an
admin of an ``imagewright serve`` registry (``service.images.local``)."""

from __future__ import annotations

import time
from typing import Any

import click

from imagewright.cli.common import (
    byte_progress,
    cloud_options,
    connect_cloud,
    json_option,
    parse_properties,
    staged_progress,
)
from imagewright.cli.render import emit_json, stdout_console
from imagewright.errors import CloudError

#: How often ``image import --wait`` asks for the import task.
POLL_SECONDS = 0.5


def _size(value: Any) -> str:
    if value is None:
        return "-"
    from imagewright.units import format_size

    return format_size(int(value))


@click.group("image")
def command() -> None:
    """Images in a cloud's image service (ours or any OpenStack Glance), through clouds.yaml."""


@command.command("upload")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--name", required=True, help="The image's name.")
@click.option("--visibility", type=click.Choice(["public", "community", "shared", "private"]), default=None)
@click.option(
    "--property", "properties", multiple=True, metavar="KEY=VALUE", help="A custom property (repeatable)."
)
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@click.option(
    "--convert-to",
    type=click.Choice(["qcow2", "raw", "vmdk", "vhd", "vhdx", "vdi"]),
    default=None,
    help="Convert first (into a scratch copy, removed afterwards); the file itself is not changed.",
)
@click.option("--disk-format", default=None, help="Declare it (default: what the inspection finds).")
@click.option("--container-format", default=None, help="Declare it (default: what the inspection finds).")
@click.option("--store", default=None, metavar="ID", help="The store to upload into (multi-store clouds).")
@click.option("--min-disk", type=int, default=None, help="GiB of disk an instance needs.")
@click.option("--min-ram", type=int, default=None, help="MiB of memory an instance needs.")
@cloud_options
@json_option
def upload(
    file: str,
    name: str,
    visibility: str | None,
    properties: tuple[str, ...],
    tags: tuple[str, ...],
    convert_to: str | None,
    disk_format: str | None,
    container_format: str | None,
    store: str | None,
    min_disk: int | None,
    min_ram: int | None,
    cloud_name: str | None,
    clouds_file: str | None,
    as_json: bool,
) -> None:
    """Inspect FILE, refuse it if the registry would, then upload it and check the checksum.

    disk_format and container_format come from the inspection; a hostile image, or one that is
    not what you declare, is refused before a byte is sent.
    """
    from imagewright.registry import upload_image

    cloud = connect_cloud(cloud_name, clouds_file)
    with byte_progress(f"uploading {name}", not as_json) as sent, staged_progress(not as_json) as stages:
        result = upload_image(
            cloud,
            file,
            name=name,
            visibility=visibility,
            properties=parse_properties(properties),
            tags=tags,
            convert_to={"vhd": "vpc"}.get(convert_to or "", convert_to),
            disk_format=disk_format,
            container_format=container_format,
            store=store,
            min_disk=min_disk,
            min_ram=min_ram,
            progress=sent,
            convert_progress=stages,
        )
    if as_json:
        emit_json(result.to_dict())
        return
    converted = f", converted from {result.converted_from}" if result.converted_from else ""
    stdout_console().print(
        f"uploaded {file} as {result.name} ({result.id}) to {result.cloud}: {result.disk_format}/"
        f"{result.container_format}{converted}, {_size(result.size)}, checksum {result.checksum} verified"
    )


@command.command("register-bundle")
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--privatekey",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Your private key (it decrypts the bundle; its signature is checked with it).",
)
@click.option(
    "--cert",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="The signer's certificate, to check the signature with too.",
)
@click.option("--name", default=None, help="The image's name (default: the manifest's).")
@click.option("--visibility", type=click.Choice(["public", "community", "shared", "private"]), default=None)
@click.option("--property", "properties", multiple=True, metavar="KEY=VALUE", help="A property (repeatable).")
@cloud_options
@json_option
def register_bundle_command(
    manifest: str,
    privatekey: str,
    cert: str | None,
    name: str | None,
    visibility: str | None,
    properties: tuple[str, ...],
    cloud_name: str | None,
    clouds_file: str | None,
    as_json: bool,
) -> None:
    """Register an EC2 image bundle (MANIFEST and its parts beside it), as euca-register does.

    The bundle is verified and unbundled first (signature, every part, the image digest); its
    image is uploaded as ami, aki or ari (the manifest's type), a machine image linked to its
    kernel and ramdisk (the manifest's aki-/ari- ids, which must be registry images) by the
    kernel_id and ramdisk_id properties.
    """
    from pathlib import Path

    from imagewright.registry.ec2 import register_bundle

    cloud = connect_cloud(cloud_name, clouds_file)
    with byte_progress("uploading", not as_json) as sent:
        result = register_bundle(
            cloud,
            manifest,
            Path(privatekey),
            name=name,
            certificate=Path(cert) if cert else None,
            visibility=visibility,
            properties=parse_properties(properties),
            progress=sent,
        )
    if as_json:
        emit_json(result.to_dict())
        return
    links = "".join(
        f", {key} {result.properties[key]}" for key in ("kernel_id", "ramdisk_id") if key in result.properties
    )
    stdout_console().print(
        f"registered {manifest} as {result.name} ({result.id}) in {result.cloud}: {result.disk_format}/"
        f"{result.container_format}, {_size(result.size)}, checksum {result.checksum} verified{links}"
    )


@command.command("list")
@click.option("--name", default=None)
@click.option("--visibility", default=None)
@click.option("--status", default=None)
@click.option("--tag", "tags", multiple=True)
@click.option("--property", "properties", multiple=True, metavar="KEY=VALUE")
@click.option("--limit", type=click.IntRange(1), default=None)
@cloud_options
@json_option
def list_command(
    name: str | None,
    visibility: str | None,
    status: str | None,
    tags: tuple[str, ...],
    properties: tuple[str, ...],
    limit: int | None,
    cloud_name: str | None,
    clouds_file: str | None,
    as_json: bool,
) -> None:
    """The images you can see."""
    from rich.table import Table

    from imagewright.registry import list_images

    cloud = connect_cloud(cloud_name, clouds_file)
    images = list_images(
        cloud,
        name=name,
        visibility=visibility,
        status=status,
        tags=tags,
        properties=parse_properties(properties),
        limit=limit,
    )
    if as_json:
        emit_json(images)
        return
    table = Table("ID", "Name", "Status", "Format", "Size", "Visibility")
    for image in images:
        table.add_row(
            image["id"],
            image.get("name") or "",
            image["status"],
            f"{image.get('disk_format') or '-'}/{image.get('container_format') or '-'}",
            _size(image.get("size")),
            image.get("visibility", ""),
        )
    stdout_console().print(table)


@command.command("show")
@click.argument("image")
@cloud_options
@json_option
def show(image: str, cloud_name: str | None, clouds_file: str | None, as_json: bool) -> None:
    """One image, by id or name."""
    from imagewright.registry import find_image

    found = find_image(connect_cloud(cloud_name, clouds_file), image)
    if as_json:
        emit_json(found)
        return
    for key in sorted(found):
        stdout_console().print(f"{key:18} {found[key]}", markup=False, highlight=False)


@command.command("download")
@click.argument("image")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The file to write.")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@cloud_options
@json_option
def download(
    image: str, output: str, force: bool, cloud_name: str | None, clouds_file: str | None, as_json: bool
) -> None:
    """Download an image's data (checked against its checksum before it appears)."""
    from imagewright.registry import download_image

    cloud = connect_cloud(cloud_name, clouds_file)
    with byte_progress(f"downloading {image}", not as_json) as received:
        result = download_image(cloud, image, output, force=force, progress=received)
    if as_json:
        emit_json(result.to_dict())
        return
    stdout_console().print(
        f"downloaded {result.id} to {output}: {_size(result.size)}, md5 {result.checksum} verified"
    )


@command.command("delete")
@click.argument("image")
@cloud_options
@json_option
def delete(image: str, cloud_name: str | None, clouds_file: str | None, as_json: bool) -> None:
    """Delete an image (by id or name)."""
    from imagewright.registry import delete_image

    deleted = delete_image(connect_cloud(cloud_name, clouds_file), image)
    if as_json:
        emit_json({"id": deleted["id"], "name": deleted.get("name"), "deleted": True})
        return
    stdout_console().print(f"deleted {deleted.get('name') or ''} ({deleted['id']})")


@command.command("share")
@click.argument("image")
@click.argument("project")
@click.option("--remove", is_flag=True, help="Stop sharing with PROJECT instead.")
@cloud_options
@json_option
def share(
    image: str, project: str, remove: bool, cloud_name: str | None, clouds_file: str | None, as_json: bool
) -> None:
    """Share an image with PROJECT (id or name): it becomes a member, pending until it accepts."""
    from imagewright.registry import share_image, unshare_image

    cloud = connect_cloud(cloud_name, clouds_file)
    result = unshare_image(cloud, image, project) if remove else share_image(cloud, image, project)
    if as_json:
        emit_json(result)
        return
    stdout_console().print(f"image {result['image_id']}: project {result['member_id']} {result['status']}")


@command.command("register-local")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--name", default=None, help="The image's name (default: the file's name).")
@click.option(
    "--store", "store_id", default=None, metavar="ID", help="The in-place store (if there are several)."
)
@click.option("--owner", default=None, metavar="PROJECT", help="The owning project (default: admin).")
@click.option(
    "--visibility",
    type=click.Choice(["public", "community", "shared", "private"]),
    default="private",
    show_default=True,
)
@click.option("--disk-format", default=None, help="Declare it (default: what the inspection finds).")
@click.option("--container-format", default=None, help="Declare it (default: what the inspection finds).")
@click.option("--property", "properties", multiple=True, metavar="KEY=VALUE")
@click.option("--data-dir", default=None, help="The registry's data dir (default $IMAGEWRIGHT_DATA_DIR).")
@json_option
def register_local(
    path: str,
    name: str | None,
    store_id: str | None,
    owner: str | None,
    visibility: str,
    disk_format: str | None,
    container_format: str | None,
    properties: tuple[str, ...],
    data_dir: str | None,
    as_json: bool,
) -> None:
    """Register PATH, a file on this machine under an in-place store's directory, as an image.

    The file is inspected where it lies and stays there (nothing is copied); the registry serves
    it from there. For admins of an 'imagewright serve' started with
    --store NAME=file-inplace:///DIR (Wakame-vdc style).
    """
    from pathlib import Path

    from imagewright.service.images.local import register_local as register
    from imagewright.service.images.local import registry_of_data_dir

    registry = registry_of_data_dir(data_dir)
    try:
        owner_id = None
        if owner is not None:
            from imagewright.catalog.accounts import find_project

            with registry.catalog.reading() as session:
                owner_id = find_project(session, owner).id
        view = register(
            registry,
            Path(path),
            store_id=store_id,
            name=name,
            owner_project=owner_id,
            visibility=visibility,
            disk_format=disk_format,
            container_format=container_format,
            properties=parse_properties(properties),
        )
    finally:
        registry.catalog.dispose()
    if as_json:
        emit_json(view)
        return
    stdout_console().print(
        f"registered {path} as {view['name']} ({view['id']}) in store {view['stores']}: "
        f"{view['disk_format']}/{view['container_format']}, {_size(view['size'])}, "
        f"checksum {view['checksum']}"
    )


# --- import (web-download, CloudStack style) ----------------------------------------------------


def _json_or_raise(response: Any, doing: str) -> Any:
    if response.status_code >= 400:
        try:
            message = response.json().get("message") or response.text
        except ValueError:
            message = response.text
        raise CloudError(f"The cloud refused to {doing}: {' '.join(str(message).split())}")
    return response.json() if response.content else None


@command.command("import")
@click.argument("url")
@click.option("--name", required=True, help="The image's name.")
@click.option("--disk-format", default=None, help="Declare it (default: what the registry finds).")
@click.option("--container-format", default=None, help="Declare it (default: what the registry finds).")
@click.option("--visibility", type=click.Choice(["public", "community", "shared", "private"]), default=None)
@click.option(
    "--property", "properties", multiple=True, metavar="KEY=VALUE", help="A custom property (repeatable)."
)
@click.option("--store", "stores", multiple=True, metavar="ID", help="Import into this store (repeatable).")
@click.option("--wait", is_flag=True, help="Show the import's progress until the image is active.")
@cloud_options
@json_option
def import_command(
    url: str,
    name: str,
    disk_format: str | None,
    container_format: str | None,
    visibility: str | None,
    properties: tuple[str, ...],
    stores: tuple[str, ...],
    wait: bool,
    cloud_name: str | None,
    clouds_file: str | None,
    as_json: bool,
) -> None:
    """Create an image from URL (web-download); --wait shows progress until it is active."""
    attributes: dict[str, Any] = {"name": name}
    for key, value in (
        ("disk_format", disk_format),
        ("container_format", container_format),
        ("visibility", visibility),
    ):
        if value is not None:
            attributes[key] = value
    attributes.update(parse_properties(properties))
    image_api = connect_cloud(cloud_name, clouds_file).connection.image
    created = _json_or_raise(image_api.post("/images", json=attributes), "create the image")
    image_id = created["id"]
    body: dict[str, Any] = {"method": {"name": "web-download", "uri": url}}
    if stores:
        body["stores"] = list(stores)
    try:
        _json_or_raise(image_api.post(f"/images/{image_id}/import", json=body), "start the import")
    except CloudError:
        image_api.delete(f"/images/{image_id}")
        raise
    if not wait:
        if as_json:
            emit_json({"image": image_api.get(f"/images/{image_id}").json()})
        else:
            stdout_console().print(f"image {image_id} is importing from {url}")
        return
    task = _wait(image_api, image_id, show=not as_json)
    image = image_api.get(f"/images/{image_id}").json()
    if task.get("status") != "success":
        raise CloudError(f"The import of {url} failed: {task.get('message') or 'the cloud gave no reason'}")
    if as_json:
        emit_json({"image": image, "task": task})
        return
    stdout_console().print(
        f"image {image_id} ({image.get('name')}) is {image.get('status')}: {image.get('disk_format')}, "
        f"{image.get('size')} bytes, checksum {image.get('checksum')}"
    )


def _wait(image_api: Any, image_id: str, *, show: bool) -> dict[str, Any]:
    """The import task once it ended, with a progress bar meanwhile."""
    with staged_progress(show) as progress:
        while True:
            tasks = _json_or_raise(image_api.get(f"/images/{image_id}/tasks"), "show the import task") or {}
            listed = tasks.get("tasks") or []
            task: dict[str, Any] = listed[-1] if listed else {}
            state = task.get("progress") or {}
            if state.get("stage"):
                progress(str(state["stage"]), int(state.get("done") or 0), state.get("total"))
            if task.get("status") in ("success", "failure"):
                return task
            if not listed:
                image = image_api.get(f"/images/{image_id}").json()
                if image.get("status") == "active":
                    return {"status": "success"}
            time.sleep(POLL_SECONDS)
