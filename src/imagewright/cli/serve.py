"""``imagewright serve``: the image registry (OpenStack Image API v2 + a Keystone v3 subset)."""

from __future__ import annotations

import click

from imagewright.cli.common import log_level_option, task_lease_option
from imagewright.cli.metadata import build_config, metadata_options
from imagewright.service.config import DEFAULT_LISTEN, parse_listen


@click.command("serve")
@click.option(
    "--data-dir",
    default=None,
    help="Where the catalog, the blobs and clouds.yaml live "
    "(default $IMAGEWRIGHT_DATA_DIR or ./imagewright-data).",
)
@click.option("--listen", default=DEFAULT_LISTEN, show_default=True, help="HOST:PORT to listen on.")
@click.option(
    "--database",
    default=None,
    metavar="URL",
    help="The catalog database (postgresql://USER@HOST/DB); default: SQLite in the data dir.",
)
@click.option(
    "--store",
    "stores",
    multiple=True,
    metavar="SPEC",
    help="A blob store: [NAME=]file:///DIR or [NAME=]s3://BUCKET[/PREFIX]?endpoint=URL (repeatable; "
    "NAME=file-inplace:///DIR for image register-local; default: files under DATA_DIR/images).",
)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Server processes.")
@click.option(
    "--server",
    "asgi_server",
    type=click.Choice(["uvicorn", "granian"]),
    default="uvicorn",
    show_default=True,
    help="The ASGI server that runs the API (the same app on either).",
)
@click.option(
    "--public-url", default=None, metavar="URL", help="The URL clients use (default http://HOST:PORT)."
)
@click.option(
    "--max-image-size",
    default="1T",
    show_default=True,
    metavar="SIZE",
    help="The largest image data accepted (Glance's image_size_cap), e.g. 20G; larger uploads get 413.",
)
@click.option(
    "--metadata-listen",
    default=None,
    metavar="HOST:PORT",
    help="Also run the instance metadata service (its own process), instances reaching it here.",
)
@metadata_options("metadata-")
@click.option(
    "--task-queue",
    type=click.Choice(["embedded", "procrastinate"]),
    default="embedded",
    show_default=True,
    help="Who runs imports and exports: threads of this server, or 'imagewright worker' processes "
    "(Procrastinate on the PostgreSQL catalog).",
)
@click.option(
    "--task-threads",
    default=1,
    show_default=True,
    type=click.IntRange(0, 64),
    help="Task threads per server process (embedded task queue).",
)
@click.option(
    "--web-download-allow",
    "web_download_allow",
    multiple=True,
    metavar="URL_PREFIX",
    help="Let web-download fetch URLs starting with this prefix from any address and port "
    "(repeatable; by default only public addresses on ports 80/443).",
)
@click.option(
    "--web-download-timeout",
    default=60.0,
    show_default=True,
    type=click.FloatRange(1.0),
    metavar="SECONDS",
    help="A web-download fails when the server sends nothing for this long.",
)
@click.option(
    "--convert-to",
    "convert_to",
    multiple=True,
    metavar="[STORE=]FORMAT",
    help="Convert imported images to raw or qcow2 (in every store, or in STORE; repeatable).",
)
@click.option(
    "--keep-original",
    is_flag=True,
    help="When an import is converted (--convert-to), keep the data as it arrived too: a second blob "
    "in the image's store, described by the image's os_imagewright_original_* properties "
    "(Glance, and the default, discard it).",
)
@click.option(
    "--glance-region",
    "glance_regions",
    multiple=True,
    metavar="NAME=CLOUD[@CLOUDS_YAML]",
    help="A Glance-compatible registry glance-download may copy from: the cloud of that name in "
    "clouds.yaml (repeatable).",
)
@click.option(
    "--export-ttl",
    default=24 * 3600.0,
    show_default=True,
    type=click.FloatRange(1.0),
    metavar="SECONDS",
    help="How long an export's signed download URL (and its file) stays valid.",
)
@task_lease_option
@log_level_option
@click.option(
    "--sweep-interval",
    default=60.0,
    show_default=True,
    type=click.FloatRange(1.0),
    metavar="SECONDS",
    help="How often each server sweeps interrupted uploads, abandoned tasks and orphan blobs.",
)
def command(
    data_dir: str | None,
    listen: str,
    database: str | None,
    stores: tuple[str, ...],
    workers: int,
    asgi_server: str,
    public_url: str | None,
    max_image_size: str,
    metadata_listen: str | None,
    trusted_proxies: tuple[str, ...],
    rate_limit: float | None,
    access_log: str | None,
    cache_check: float,
    task_queue: str,
    task_threads: int,
    web_download_allow: tuple[str, ...],
    web_download_timeout: float,
    convert_to: tuple[str, ...],
    keep_original: bool,
    glance_regions: tuple[str, ...],
    export_ttl: float,
    task_lease: float,
    sweep_interval: float,
    log_level: str,
) -> None:
    """Run the image registry: Glance-compatible images at /image, identity at /identity/v3.

    The first start creates the catalog, the admin project and user (password from
    $IMAGEWRIGHT_ADMIN_PASSWORD, else generated and printed once) and writes DATA_DIR/clouds.yaml
    and DATA_DIR/openrc for OpenStack clients. Every uploaded image is inspected; unsafe images
    and images that are not what their disk_format says are refused.
    """
    from imagewright.service import datadir, logs, serving
    from imagewright.units import format_size, parse_size

    logs.configure(log_level)  # what the start-up (the sweep) logs, too

    host, port = parse_listen(listen)
    if metadata_listen is not None:
        parse_listen(metadata_listen)
    size_cap = parse_size(max_image_size)
    if size_cap <= 0:
        raise click.BadParameter(
            "must be a size larger than zero (for example 20G).", param_hint="--max-image-size"
        )
    directory = datadir.resolve_data_dir(data_dir)
    settings = {
        "task_queue": task_queue,
        "task_threads": task_threads,
        "web_download_allow": web_download_allow,
        "web_download_idle_timeout": web_download_timeout,
        "convert_to": convert_to,
        "keep_original": keep_original,
        "glance_regions": glance_regions,
        "export_ttl_seconds": export_ttl,
        "task_lease_seconds": task_lease,
        "sweep_interval_seconds": sweep_interval,
        "log_level": log_level,
    }
    prepared = serving.prepare(
        directory,
        host,
        port,
        database=database,
        store_specs=stores,
        public_url=public_url,
        image_size_cap=size_cap,
        settings=settings,
    )
    config = prepared.config
    before, after = prepared.schema
    echo = click.echo
    echo(f"imagewright registry: data dir {directory}, catalog {serving.describe_database(config)}")
    if before != after:
        echo(f"  catalog schema {before or 'empty'} -> {after}")
    if prepared.sweep:
        echo(f"  start-up sweep: {prepared.sweep.summary()}")
    if config.task_queue == "procrastinate":
        echo("  tasks:    run by 'imagewright worker' processes (Procrastinate on the catalog)")
    if prepared.admin_password is not None:
        echo("  created the project 'admin' and the user 'admin' (role admin)")
        echo(f"  admin password: {prepared.admin_password}   (shown once; also in {prepared.clouds_yaml})")
    echo(f"  identity: {config.public_url}/identity/v3")
    echo(f"  image:    {config.public_url}/image (images up to {format_size(config.image_size_cap)})")
    if prepared.clouds_yaml.exists():
        echo(
            f"  try:      OS_CLIENT_CONFIG_FILE={prepared.clouds_yaml} OS_CLOUD=imagewright "
            "openstack image list"
        )
    metadata = None
    if metadata_listen is not None:
        metadata = build_config(
            directory,
            config.database_url,
            metadata_listen,
            trusted_proxies,
            rate_limit,
            access_log,
            cache_check,
            log_level,
        )
        echo(
            f"  metadata: http://{metadata_listen} (instances), "
            f"{directory / 'metadata' / 'socket' / 'guest.sock'} (forwarders)"
        )
    echo(f"  compute:  {config.public_url}/compute/v1/instances")
    echo(
        f"listening on {listen} with {workers} {asgi_server} worker{'s' if workers != 1 else ''} "
        "(Ctrl-C stops)",
        err=False,
    )
    serving.run(config, host, port, workers, metadata=metadata, server=asgi_server)
