"""The verbs of ``imagewright``, one line each; a verb's module is imported only when it runs.

Adding a command is adding a line: its name, where its ``click.Command`` lives
(``"module:attribute"``, the module inside ``imagewright.cli``), and the first sentence of
its help, which ``imagewright --help`` lists without importing anything
(``tests/test_cli_startup.py`` checks that the sentence matches the command's own help).
Order is the order of ``imagewright --help``: the pipeline, left to right. ``streams``
marks the verbs that stream whole images (``allocator``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import click


class Verb(NamedTuple):
    name: str
    #: ``"module:attribute"`` of the click command, the module inside ``imagewright.cli``.
    target: str
    #: The first sentence of the command's help (what ``imagewright --help`` shows).
    summary: str
    #: The verb streams whole images in one short-lived process: glibc is told to keep the
    #: buffers it frees (``allocator.keep_freed_buffers``). The servers are not.
    streams: bool = False

    def load(self) -> click.Command:
        module, _, attribute = self.target.partition(":")
        command: click.Command = getattr(importlib.import_module(f"imagewright.cli.{module}"), attribute)
        return command


VERBS: tuple[Verb, ...] = (
    Verb("inspect", "inspect:command", "Tell what each IMAGE is and whether it is safe to touch."),
    Verb(
        "convert",
        "convert:command",
        "Convert SRC to DST in another format, computing checksums as it writes.",
        streams=True,
    ),
    Verb(
        "resize",
        "resize:command",
        "Resize IMAGE to SIZE (8G), or by +DELTA (+1G) or -DELTA (-512M).",
        streams=True,
    ),
    Verb(
        "build",
        "build:command",
        "Build a bootable, partitioned disk from SOURCE, without root.",
        streams=True,
    ),
    Verb("context", "context:command", "Build context media: the seed an instance reads at first boot."),
    Verb(
        "cat",
        "guestfiles:cat_command",
        "Print a file from inside a guest image (symbolic links are followed).",
    ),
    Verb("ls", "guestfiles:ls_command", "List a directory inside a guest image."),
    Verb(
        "copy-in",
        "guestfiles:copy_in_command",
        "Copy a host file into a guest image (into a directory keeps the file's name).",
    ),
    Verb(
        "boot",
        "boot:command",
        "Boot IMAGE under QEMU from its own disk and watch the serial console (ttyS0).",
    ),
    Verb(
        "prepare",
        "prepare:command",
        "Make a guest image cloud-ready: fresh identity on every instance, no MAC addresses baked in, "
        "clean logs, and (with --agent) a boot-time agent that asks the cloud for hostname, SSH keys, "
        "network and user-data.",
    ),
    Verb(
        "package",
        "package:command",
        "Make and check packages: OVA (signed or not) and EC2 image bundles.",
        streams=True,
    ),
    Verb(
        "publish",
        "publish:command",
        "Write every output of IMAGE (qcow2, raw.gz, OVA, EC2 bundle ...) from one read.",
        streams=True,
    ),
    Verb(
        "serve",
        "serve:command",
        "Run the image registry: Glance-compatible images at /image, identity at /identity/v3.",
    ),
    Verb(
        "worker",
        "worker:command",
        "Run import/export tasks of a registry started with '--task-queue procrastinate'.",
    ),
    Verb(
        "image",
        "image:command",
        "Images in a cloud's image service (ours or any OpenStack Glance), through clouds.yaml.",
        streams=True,
    ),
    Verb(
        "instance",
        "instance:command",
        "Instances: what the metadata service tells each VM (keys, user-data, network).",
    ),
    Verb(
        "metadata",
        "metadata:command",
        "The instance metadata service (EC2 and OpenStack trees) for the registry's instances.",
    ),
    Verb(
        "run",
        "launch:run_command",
        "Start an instance of IMAGE_REF (a file, or a registry image id or name) under QEMU.",
    ),
    Verb(
        "ps",
        "launch:ps_command",
        "List the instances, their state checked against the live QEMU processes, and orphans.",
    ),
    Verb(
        "stop",
        "launch:stop_command",
        "Stop instances: ACPI power-off, then QEMU quits (its disks closed cleanly).",
    ),
    Verb("rm", "launch:rm_command", "Remove instances: record, overlay, console log and forwarder."),
    Verb(
        "console", "launch:console_command", "Print an instance's serial console (saved in its console log)."
    ),
    Verb(
        "wait",
        "launch:wait_command",
        "Wait until an instance's console shows it ready (exit 1 if it does not in time).",
    ),
    Verb(
        "ssh",
        "launch:ssh_command",
        "Open an SSH session on an instance (or run COMMAND there) through its port forwarded to 22.",
    ),
    Verb(
        "verify",
        "launch:verify_command",
        "Boot IMAGE_REF with a fresh hostname, key and user-data on a bigger disk, and check from "
        "outside that each took.",
    ),
    Verb(
        "accounts",
        "accounts:command",
        "Manage the registry's projects and users (roles admin, member, reader per project).",
    ),
    Verb("db", "db:command", "The registry's catalog database."),
)

BY_NAME: dict[str, Verb] = {verb.name: verb for verb in VERBS}
