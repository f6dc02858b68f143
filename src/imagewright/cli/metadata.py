"""``imagewright metadata``: the instance metadata service on its own, and its certificate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from imagewright.cli.common import log_level_option

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_METADATA_LISTEN = "169.254.169.254:80"


def metadata_options(prefix: str) -> Callable[[F], F]:
    """The service's options, as ``--trusted-proxy`` here and ``--metadata-trusted-proxy`` on serve."""

    def decorate(func: F) -> F:
        options = [
            click.option(
                f"--{prefix}trusted-proxy",
                "trusted_proxies",
                multiple=True,
                metavar="ADDR",
                help="A proxy (by address) whose requests name the instance in X-Instance-ID + "
                "X-Instance-ID-Signature, as Nova's metadata proxy sends them (repeatable; none by default).",
            ),
            click.option(
                f"--{prefix}rate-limit",
                "rate_limit",
                type=click.FloatRange(min=1.0),
                default=None,
                metavar="N",
                help="At most N requests per second per instance; beyond: 429 (default: no limit).",
            ),
            click.option(
                f"--{prefix}access-log",
                "access_log",
                default=None,
                metavar="FILE",
                help="The access log: a file, - for stderr, or off (default DATA_DIR/metadata/access.log).",
            ),
            click.option(
                f"--{prefix}cache-check",
                "cache_check",
                type=click.FloatRange(min=0.05, max=60.0),
                default=0.5,
                show_default=True,
                metavar="SECONDS",
                help="How often the catalog's instance change counter is read.",
            ),
        ]
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def build_config(
    data_dir: Any,
    database_url: str,
    listen: str | None,
    trusted_proxies: tuple[str, ...],
    rate_limit: float | None,
    access_log: str | None,
    cache_check: float,
    log_level: str,
) -> Any:
    from imagewright.service.config import parse_listen
    from imagewright.service.imds.config import MetadataConfig, parse_trusted_proxy

    return MetadataConfig(
        data_dir=data_dir,
        database_url=database_url,
        listen=parse_listen(listen) if listen else None,
        trusted_proxies=tuple(parse_trusted_proxy(text) for text in trusted_proxies),
        rate_limit=rate_limit,
        access_log=access_log,
        cache_check_seconds=cache_check,
        log_level=log_level,
    )


@click.group("metadata")
def command() -> None:
    """The instance metadata service (EC2 and OpenStack trees) for the registry's instances."""


@command.command("serve")
@click.option("--data-dir", default=None, help="The registry's data dir (its catalog and metadata keys).")
@click.option(
    "--database", default=None, metavar="URL", help="The catalog database (instead of the data dir's)."
)
@click.option(
    "--listen",
    default=DEFAULT_METADATA_LISTEN,
    show_default=True,
    metavar="HOST:PORT",
    help="Where instances reach it (the forwarders' unix socket DATA_DIR/metadata/socket/guest.sock "
    "is always served).",
)
@metadata_options("")
@log_level_option
def serve(
    data_dir: str | None,
    database: str | None,
    listen: str,
    trusted_proxies: tuple[str, ...],
    rate_limit: float | None,
    access_log: str | None,
    cache_check: float,
    log_level: str,
) -> None:
    """Serve instance metadata from the registry's catalog, without the registry's APIs.

    An instance is known by the source address of its requests (its fixed address), by the
    signed headers of a trusted proxy, or by the forwarder that `imagewright run` puts behind
    QEMU's guestfwd; anybody else gets 404.
    """
    from imagewright.service import datadir, logs
    from imagewright.service.imds import serving

    logs.configure(log_level)  # as `serve` does: what start-up logs has a handler too
    directory = datadir.resolve_data_dir(data_dir)
    if not directory.is_dir():
        raise click.UsageError(f"There is no data dir {directory}; start 'imagewright serve' once first.")
    config = build_config(
        directory,
        datadir.database_url_for(directory, database),
        listen,
        trusted_proxies,
        rate_limit,
        access_log,
        cache_check,
        log_level,
    )
    channel = serving.prepare(config)
    click.echo(f"imagewright metadata service: data dir {directory}")
    click.echo(f"  forwarders: {channel.socket_path}")
    click.echo(f"listening on {listen} (Ctrl-C stops)")
    serving.run(config, prepared=channel)


@command.command("certificate")
@click.option("--data-dir", default=None, help="The registry's data dir.")
def certificate(data_dir: str | None) -> None:
    """Print the certificate instance identity documents are signed with (PEM)."""
    from imagewright.metadata.channel import MetadataChannel
    from imagewright.service import datadir
    from imagewright.service.imds.signing import load_signer

    directory = datadir.resolve_data_dir(data_dir)
    datadir.ensure_data_dir(directory)
    click.echo(load_signer(MetadataChannel.for_data_dir(directory)).certificate_pem.decode("ascii"), nl=False)
