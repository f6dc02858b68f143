"""``imagewright image import URL --name …``: register an image from a URL, CloudStack style.

Creates the image, starts a ``web-download`` import (Image API v2.6 interoperable import, so
any Glance that enables web-download works, ours included) and, with ``--wait``, shows the
task's progress until the image is ``active`` — or exits 1 with the task's message. Talks
through openstacksdk/keystoneauth and ``clouds.yaml`` like every OpenStack client.

Kept in its own module so that the ``image`` command group (``cli/image.py``) only adds it.
"""

from __future__ import annotations

import os
import time
from typing import Any

import click

from imagewright.cli.common import emit_json, json_option, staged_progress, stdout_console
from imagewright.errors import ImagewrightError, InvalidArgumentError

POLL_SECONDS = 0.5


class ImportTaskError(ImagewrightError):
    """The cloud's import task failed (or the cloud refused the import); its sentence is ours."""


def _connect(cloud: str | None, clouds_file: str | None) -> Any:
    import keystoneauth1.exceptions
    import openstack.config
    import openstack.connection
    import openstack.exceptions

    try:
        files = [clouds_file] if clouds_file else None
        region = openstack.config.OpenStackConfig(config_files=files).get_one(
            cloud=cloud or os.environ.get("OS_CLOUD") or None
        )
        connection = openstack.connection.Connection(config=region)
        connection.authorize()
    except (openstack.exceptions.SDKException, keystoneauth1.exceptions.ClientException) as err:
        raise ImportTaskError(f"Cannot sign in to the cloud: {err}.") from None
    return connection


def _json_or_raise(response: Any, doing: str) -> Any:
    if response.status_code >= 400:
        try:
            message = response.json().get("message") or response.text
        except ValueError:
            message = response.text
        raise ImportTaskError(f"The cloud refused to {doing}: {' '.join(str(message).split())}")
    return response.json() if response.content else None


@click.command("import")
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
@click.option(
    "--cloud", "cloud_name", default=None, metavar="NAME", help="The cloud in clouds.yaml ($OS_CLOUD)."
)
@click.option("--clouds-file", default=None, metavar="PATH", help="A clouds.yaml ($OS_CLIENT_CONFIG_FILE).")
@json_option
def command(
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
    for item in properties:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidArgumentError(f"--property {item!r} is not KEY=VALUE.")
        attributes[key] = value
    connection = _connect(cloud_name, clouds_file)
    image_api = connection.image
    created = _json_or_raise(image_api.post("/images", json=attributes), "create the image")
    image_id = created["id"]
    body: dict[str, Any] = {"method": {"name": "web-download", "uri": url}}
    if stores:
        body["stores"] = list(stores)
    try:
        _json_or_raise(image_api.post(f"/images/{image_id}/import", json=body), "start the import")
    except ImportTaskError:
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
        raise ImportTaskError(
            f"The import of {url} failed: {task.get('message') or 'the cloud gave no reason'}"
        )
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
