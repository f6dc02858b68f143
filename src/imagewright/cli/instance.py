"""``imagewright instance``: instance records in the registry's catalog (what the metadata service serves).

Works straight on the catalog of ``--data-dir`` (or ``--database URL``), as the operator, whether
or not a server runs; the same records are served over HTTP at ``/compute/v1/instances``.
Launching under QEMU is ``imagewright run`` (a later command); this only keeps the records.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from imagewright.cli.common import data_dir_option, database_option, json_option, tokens_option
from imagewright.cli.render import emit_json, stdout_console
from imagewright.errors import InvalidArgumentError


@click.group("instance")
def command() -> None:
    """Instances: what the metadata service tells each VM (keys, user-data, network)."""


def read_keys(paths: tuple[str, ...]) -> list[tuple[str, Any]]:
    """Every key of every file, each named by its comment when that is a usable name, else key-N."""
    from imagewright.metadata.instance import collect_keys, read_ssh_key_file

    keys = collect_keys(read_ssh_key_file(Path(path)) for path in paths)
    named: list[tuple[str, Any]] = []
    used: set[str] = set()
    for index, key in enumerate(keys):
        name = key.comment.strip()
        usable = 0 < len(name) <= 255 and name.isprintable() and "=" not in name and name not in used
        name = name if usable else f"key-{index}"
        used.add(name)
        named.append((name, key))
    return named


def _vendor_data(path: str | None) -> Any:
    if path is None:
        return None
    from imagewright.metadata.instance import read_user_data

    data = read_user_data(Path(path), 64 * 1024, "vendor-data file")
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InvalidArgumentError(f"The vendor-data file '{path}' is not JSON ({err}).") from None


@command.command("create")
@click.option("--image", "image_ref", required=True, metavar="REF", help="The registry image (id or name).")
@click.option("--name", required=True, help="The instance's name.")
@click.option("--project", default="admin", show_default=True, help="The project that owns it.")
@click.option("--hostname", default=None, help="Its host name (default: the name).")
@click.option(
    "--key-file", "key_files", multiple=True, metavar="FILE", help="OpenSSH public keys (repeatable)."
)
@click.option(
    "--user-data", "user_data_file", default=None, metavar="FILE", help="User-data (at most 64 KiB)."
)
@click.option(
    "--vendor-data", "vendor_data_file", default=None, metavar="FILE", help="Vendor data (a JSON object)."
)
@click.option(
    "--address",
    "addresses",
    multiple=True,
    metavar="IP",
    help="Fixed address of the next interface (repeatable): the metadata service knows the instance by it.",
)
@click.option("--mac", "macs", multiple=True, metavar="MAC", help="MAC of the next interface (repeatable).")
@click.option("--public-address", default=None, metavar="IP", help="Its public address (public-ipv4).")
@click.option(
    "--network",
    default="dhcp",
    show_default=True,
    metavar="SPEC",
    help="dhcp or static:IP/MASK,GATEWAY,DNS...",
)
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="A tag (repeatable).")
@click.option("--type", "instance_type", default="m1.small", show_default=True, help="Instance type.")
@click.option("--availability-zone", default="nova", show_default=True)
@tokens_option
@click.option(
    "--endpoint",
    type=click.Choice(["enabled", "disabled"]),
    default="enabled",
    show_default=True,
    help="disabled: the metadata service answers this instance 404.",
)
@data_dir_option
@database_option
@json_option
def create(
    image_ref: str,
    name: str,
    project: str,
    hostname: str | None,
    key_files: tuple[str, ...],
    user_data_file: str | None,
    vendor_data_file: str | None,
    addresses: tuple[str, ...],
    macs: tuple[str, ...],
    public_address: str | None,
    network: str,
    tags: tuple[str, ...],
    instance_type: str,
    availability_zone: str,
    tokens: str,
    endpoint: str,
    data_dir: str | None,
    database: str | None,
    as_json: bool,
) -> None:
    """Record a new instance of the image REF."""
    from imagewright.catalog import accounts, instances
    from imagewright.metadata.instance import read_user_data
    from imagewright.service.datadir import open_catalog

    keys = read_keys(key_files)
    user_data = (
        read_user_data(Path(user_data_file), instances.MAX_USER_DATA_BYTES)
        if user_data_file is not None
        else None
    )
    vendor_data = _vendor_data(vendor_data_file)
    tag_pairs = dict(instances.parse_tag(text) for text in tags)
    catalog = open_catalog(data_dir, database)
    try:
        with catalog.writing() as session:
            owner = accounts.find_project(session, project)
            image = instances.resolve_image(session, image_ref, owner.id, is_admin=False)
            spec = instances.InstanceSpec.build(
                name=name,
                image_id=image.id,
                hostname=hostname,
                keys=keys,
                user_data=user_data,
                vendor_data=vendor_data,
                tags=tag_pairs,
                addresses=addresses,
                macs=macs,
                public_address=public_address,
                network=network,
                instance_type=instance_type,
                availability_zone=availability_zone,
                http_tokens=tokens,
                http_endpoint=endpoint,
            )
            created = instances.create_instance(session, spec, owner.id)
            view = instances.instance_view(created)
    finally:
        catalog.dispose()
    if as_json:
        emit_json(view)
    else:
        stdout_console().print(f"instance {view['id']} created ({view['name']}, image {view['image_id']})")


@command.command("list")
@click.option("--project", default=None, help="Only this project's (default: every project's).")
@data_dir_option
@database_option
@json_option
def list_command(project: str | None, data_dir: str | None, database: str | None, as_json: bool) -> None:
    """List the instances."""
    from imagewright.catalog import accounts, instances
    from imagewright.service.datadir import open_catalog

    catalog = open_catalog(data_dir, database)
    try:
        with catalog.reading() as session:
            project_id = accounts.find_project(session, project).id if project is not None else None
            rows = [instances.instance_view(row) for row in instances.list_instances(session, project_id)]
    finally:
        catalog.dispose()
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        addresses = ",".join(i["address"] for i in row["interfaces"] if i["address"]) or "-"
        options = row["metadata_options"]
        stdout_console().print(
            f"{row['id']}  {row['name']}  image {row['image_id']}  {addresses}  "
            f"tokens {options['http_tokens']}  endpoint {options['http_endpoint']}"
        )


@command.command("show")
@click.argument("instance_id")
@data_dir_option
@database_option
@json_option
def show(instance_id: str, data_dir: str | None, database: str | None, as_json: bool) -> None:
    """Show one instance (with its keys, user-data and vendor data under --json)."""
    from imagewright.catalog import instances
    from imagewright.service.datadir import open_catalog

    catalog = open_catalog(data_dir, database)
    try:
        with catalog.reading() as session:
            view = instances.instance_view(instances.get_instance(session, instance_id), with_user_data=True)
    finally:
        catalog.dispose()
    if as_json:
        emit_json(view)
        return
    for key in (
        "id",
        "name",
        "project_id",
        "image_id",
        "hostname",
        "instance_type",
        "availability_zone",
        "network",
    ):
        stdout_console().print(f"{key + ':':<20}{view[key]}")
    for interface in view["interfaces"]:
        stdout_console().print(
            f"{'interface:':<20}{interface['device_index']} mac {interface['mac']} "
            f"address {interface['address'] or '-'}"
            + (f" public {interface['public_address']}" if interface["public_address"] else "")
        )
    stdout_console().print(f"{'keys:':<20}{', '.join(view['key_names']) or '-'}")
    stdout_console().print(f"{'tags:':<20}{json.dumps(view['tags'])}")
    options = view["metadata_options"]
    stdout_console().print(
        f"{'metadata:':<20}tokens {options['http_tokens']}, endpoint {options['http_endpoint']}"
    )
    stdout_console().print(f"{'user-data:':<20}{'yes' if view['has_user_data'] else 'none'}")


@command.command("delete")
@click.argument("instance_ids", nargs=-1, required=True)
@data_dir_option
@database_option
@json_option
def delete(instance_ids: tuple[str, ...], data_dir: str | None, database: str | None, as_json: bool) -> None:
    """Delete instances (the metadata service forgets them within its cache check interval)."""
    from imagewright.catalog import instances
    from imagewright.metadata.channel import MetadataChannel
    from imagewright.service.datadir import open_catalog, resolve_data_dir

    catalog = open_catalog(data_dir, database)
    try:
        with catalog.writing() as session:
            rows = [instances.get_instance(session, instance_id) for instance_id in instance_ids]
            for row in rows:
                instances.delete_instance(session, row)
    finally:
        catalog.dispose()
    if database is None:
        channel = MetadataChannel.for_data_dir(resolve_data_dir(data_dir))
        for instance_id in instance_ids:
            channel.remove_forwarder(instance_id)
    if as_json:
        emit_json({"deleted": list(instance_ids)})
    else:
        for instance_id in instance_ids:
            stdout_console().print(f"instance {instance_id} deleted")
