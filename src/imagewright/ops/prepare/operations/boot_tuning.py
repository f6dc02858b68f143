"""boot-tuning: make the first boot of an instance waste nothing (``prepare --boot-tuning``).

A distribution's image as it comes from debootstrap + ``update-grub`` waits 5 s in the GRUB
menu, talks only to the screen (a cloud's console log stays empty), lets cloud-init probe a
dozen datasources (``ds-identify``, then each one's timeouts) and holds the boot for
``systemd-networkd-wait-online`` (2 min when an interface stays down). Each edit below is made
only where its file exists, and said in the report:

- ``/boot/grub/grub.cfg`` (and ``/boot/grub2/grub.cfg``): every ``set timeout=N`` becomes
  ``set timeout=0``; without a serial terminal, ``serial --unit=0 --speed=115200`` and
  ``terminal_input/terminal_output serial console`` go first; every ``linux``/``linuxefi``
  line without a serial console gets ``console=tty0 console=ttyS0,115200`` (the order build
  writes, ``ops/build/grubcfg.py``: the last one is ``/dev/console``);
- ``/etc/default/grub``: ``GRUB_TIMEOUT=0``, ``GRUB_TERMINAL="console serial"``, the serial
  command and the console arguments in ``GRUB_CMDLINE_LINUX`` — so the guest's own
  ``update-grub`` (a kernel update) keeps all of it;
- cloud-init (``/etc/cloud`` exists): ``/etc/cloud/cloud.cfg.d/99_imagewright_datasource.cfg``
  pins ``datasource_list`` to the one datasource the image will see (``--datasource``:
  ``ec2`` for the metadata service, ``nocloud``, ``configdrive``, ``opennebula``) and
  ``None`` (cloud-init's documented fallback) — or to several when the medium is not known
  (``publish``'s default ``nocloud,configdrive,ec2``: ds-identify takes the datasources it
  *found* — a ``cidata`` or ``config-2`` labelled medium — over those that *maybe* apply, Ec2
  without an EC2 SMBIOS; cloud-init ``tools/ds-identify`` ``_main``, so an attached medium wins
  and the metadata service is the fallback); ``ec2`` also sets ``strict_id: false``
  (cloud-init docs, "Datasources": Ec2 ``strict_id``), so a machine not named EC2 in SMBIOS
  still uses it. cloud-init and ds-identify read ``cloud.cfg.d/*.cfg`` in name order, the last
  ``datasource_list`` winning: the name sorts after ``build``'s ``99-imagewright.cfg`` ("_"
  after "-") and the package's ``90_dpkg.cfg`` (a ``90_…`` name lost to build's list, and the
  pin did nothing on a built image);
- cloud-init (``/etc/cloud`` exists) whose SSH server does not use DSA host keys:
  ``/etc/cloud/cloud.cfg.d/99_imagewright_ssh_keys.cfg`` sets ``ssh_genkeytypes``. cloud-init
  22.4's default list also makes a DSA key (``cc_ssh.GENERATE_KEY_NAMES``), in its init stage,
  which the login prompt waits for (cloud-init.service is ordered before sysinit.target);
  OpenSSH's sshd has not loaded a DSA host key by default since 7.0 (sshd_config(5), HostKey),
  so that key is made and never used. On a systemd guest the list is ``[ed25519, ecdsa]`` and
  the RSA host key is made after the boot instead (``SSH_RSA_UNIT``, enabled in
  multi-user.target): an RSA-3072 key is a prime search that under TCG took 15-29 s inside a
  one-vCPU Debian 12 guest (``ssh-keygen -t rsa -b 3072``, three runs, host load 5.5; ed25519
  and ecdsa 0.13-0.19 s each), most of cloud-init's ``ssh`` module and the longest item between
  the kernel and the login prompt. The unit is ordered after cloud-init.service (whose ``ssh``
  module deletes every host key at an instance's first boot, ``ssh_deletekeys``) and after
  multi-user.target (a target waits for the units it wants unless they are ordered otherwise,
  and cloud-final.service, which runs the user-data, waits for multi-user.target), runs
  ``ssh-keygen -A`` (only the missing types; each key written to a temporary name and renamed)
  in the idle CPU and I/O classes, and then asks sshd to reload (SIGHUP: it re-executes and
  loads the new key; open sessions stay). Until then sshd offers ed25519 and ecdsa, which every
  OpenSSH since 6.5 (2014), PuTTY since 0.68, paramiko and Go's x/crypto/ssh accept; a client
  that knows only RSA host keys (OpenSSH < 5.7, old JSch) connects once the key is made, a
  minute or so after the prompt under TCG, at once on KVM. Without systemd the list is
  ``[rsa, ecdsa, ed25519]``, all made before the prompt as before. Left alone when
  ``/etc/ssh/sshd_config`` (or a ``sshd_config.d/*.conf``) names a DSA ``HostKey``, or when any
  cloud-init configuration already sets ``ssh_genkeytypes``;
- ``systemd-networkd-wait-online.service`` and ``NetworkManager-wait-online.service``, where
  installed, are masked (a link to ``/dev/null`` in ``/etc/systemd/system``): an instance's
  network is up by DHCP or not at all, and nothing on a cloud image should wait for it.

Looked at and not done (Debian 12 + cloud-init under TCG, one vCPU, host load 6: ``systemd-analyze
critical-chain`` of the serial getty is systemd-fsck-root (1.6-3 s) -> cloud-init-local.service
(23 s, of which its init-local stage 3.1 s: the rest is Python importing cloud-init, 4-5.5 s on
its own after the boot, slower beside the boot's other units) -> cloud-init.service (25 s, stage
14 s: ``ssh`` 8.2 s, growpart 2.0 s, users-groups 1.4 s) -> sysinit.target ->
systemd-user-sessions -> getty): ``quiet`` on the kernel line (the serial console log is what a
cloud shows its users; some 60 KB of kernel and systemd lines, two port accesses a character —
well under a second, not measured); masking ``e2scrub_reap.service`` and build's
``imagewright-grub-install-device.service`` (15 and 18 s at one vCPU, but in the idle CPU class
and off the chain); systemd's generators (about 3 s together once the boot is done, 0.5 s of it
cloud-init's ds-identify, which finds the pinned datasource at once); cloud-init's
growpart/resizefs stay (2 s when the disk is bigger, as verify's is: that is the work asked for);
GRUB's ``recordfail`` timeout after an unclean shutdown is Ubuntu's and left alone. Not made at
all, the RSA host key would have saved the same time with less machinery, but clients that
expect one would fail for good. The vCPUs and the CPU model an instance gets are
``compute/instance.py``'s.
"""

from __future__ import annotations

import re

from imagewright.ops.prepare.context import PrepareContext
from imagewright.ops.prepare.model import BOOT_DATASOURCES, datasource_kinds
from imagewright.ops.prepare.operations.base import Operation

GRUB_CONFIGS = ("/boot/grub/grub.cfg", "/boot/grub2/grub.cfg")
GRUB_DEFAULTS = "/etc/default/grub"
CLOUD_DIR = "/etc/cloud"
DATASOURCE_CONF = "/etc/cloud/cloud.cfg.d/99_imagewright_datasource.cfg"
CLOUD_CONFIG_DIR = "/etc/cloud/cloud.cfg.d"
SSH_KEYS_CONF = "/etc/cloud/cloud.cfg.d/99_imagewright_ssh_keys.cfg"
#: ``ssh_genkeytypes`` without systemd (every key before the login prompt), and with it (the RSA
#: key made after the boot by ``SSH_RSA_UNIT``).
SSH_KEY_TYPES = ("rsa", "ecdsa", "ed25519")
SSH_KEY_TYPES_DEFERRED = ("ed25519", "ecdsa")
SSH_RSA_UNIT_NAME = "imagewright-ssh-rsa-host-key.service"
SSH_RSA_UNIT = f"/etc/systemd/system/{SSH_RSA_UNIT_NAME}"
SSH_RSA_UNIT_LINK = f"/etc/systemd/system/multi-user.target.wants/{SSH_RSA_UNIT_NAME}"
SSH_RSA_UNIT_TEXT = """[Unit]
Description=Make the SSH RSA host key after the boot (imagewright prepare --boot-tuning)
# after cloud-init's ssh module (it deletes an instance's old host keys) and after the boot's
# own work: multi-user.target and cloud-final.service do not wait for this unit
After=cloud-init.service ssh.service multi-user.target
ConditionPathExists=!/etc/ssh/ssh_host_rsa_key
ConditionFileIsExecutable=/usr/bin/ssh-keygen

[Service]
Type=oneshot
CPUSchedulingPolicy=idle
IOSchedulingClass=idle
# only the missing key types, each written to a temporary name and renamed into place
ExecStart=/usr/bin/ssh-keygen -A
# sshd re-executes on SIGHUP and loads the new key; open sessions stay
ExecStartPost=-/bin/systemctl --no-block try-reload-or-restart ssh.service

[Install]
WantedBy=multi-user.target
"""


def ssh_keys_text(types: tuple[str, ...]) -> str:
    why = (
        "no DSA: sshd has not loaded a DSA host key by default since OpenSSH 7.0"
        if "rsa" in types
        else f"RSA comes after the boot, from {SSH_RSA_UNIT_NAME}; no DSA"
    )
    return (
        "# imagewright prepare --boot-tuning: the host key types made before the login prompt\n"
        f"# ({why})\nssh_genkeytypes: [ {', '.join(types)} ]\n"
    )


SSHD_CONFIGS = ("/etc/ssh/sshd_config",)
SSHD_CONFIG_DIR = "/etc/ssh/sshd_config.d"
#: ``--datasource`` -> cloud-init's datasource name.
DATASOURCES = dict(zip(BOOT_DATASOURCES, ("Ec2", "NoCloud", "ConfigDrive", "OpenNebula"), strict=True))
WAIT_ONLINE_UNITS = ("systemd-networkd-wait-online.service", "NetworkManager-wait-online.service")
_SYSTEMD_DIRECTORIES = ("/lib/systemd", "/usr/lib/systemd")
_UNIT_DIRECTORIES = tuple(f"{directory}/system" for directory in _SYSTEMD_DIRECTORIES)
MASKED_DIRECTORY = "/etc/systemd/system"
#: The kernel console order build writes (ops/build/grubcfg.py CONSOLE_ARGUMENTS).
CONSOLE_ARGUMENTS = "console=tty0 console=ttyS0,115200"
SERIAL_LINES = (
    "serial --unit=0 --speed=115200",
    "terminal_input serial console",
    "terminal_output serial console",
)

_TIMEOUT = re.compile(r"(?m)^(\s*set\s+timeout\s*=\s*)(-?\d+)\s*$")
_LINUX = re.compile(r"(?m)^(\s*linux(?:efi|16)?\s+\S+)(.*)$")
_SERIAL_TERMINAL = re.compile(r"(?m)^\s*terminal_output\b.*\bserial\b")
_DSA_HOST_KEY = re.compile(r"(?mi)^\s*HostKey\s+\S*\bssh_host_dsa_key\b")
_GENKEYTYPES = re.compile(r"(?m)^ssh_genkeytypes\s*:")


def tuned_grub_cfg(text: str) -> tuple[str, list[str]]:
    """``text`` with timeout 0, a serial terminal and serial kernel consoles; what changed."""
    changes: list[str] = []
    timeouts = 0

    def zero(match: re.Match[str]) -> str:
        nonlocal timeouts
        if match.group(2) == "0":
            return match.group(0)
        timeouts += 1
        return f"{match.group(1)}0"

    text = _TIMEOUT.sub(zero, text)
    if timeouts:
        changes.append("menu timeout 0")
    if not _SERIAL_TERMINAL.search(text):
        text = "\n".join(SERIAL_LINES) + "\n" + text
        changes.append("serial terminal")
    consoles = 0

    def with_console(match: re.Match[str]) -> str:
        nonlocal consoles
        if "console=ttyS" in match.group(2):
            return match.group(0)
        consoles += 1
        return f"{match.group(1)}{match.group(2).rstrip()} {CONSOLE_ARGUMENTS}"

    text = _LINUX.sub(with_console, text)
    if consoles:
        changes.append(f"serial console on {consoles} kernel line(s)")
    return text, changes


def _set_variable(text: str, name: str, value: str) -> str:
    line = f"{name}={value}"
    pattern = re.compile(rf"(?m)^\s*#?\s*{name}=.*$")
    if pattern.search(text):
        return pattern.sub(lambda _m: line, text, count=1)
    return text + ("" if not text or text.endswith("\n") else "\n") + line + "\n"


def tuned_grub_defaults(text: str) -> str:
    """``/etc/default/grub`` keeping what ``tuned_grub_cfg`` does across ``update-grub``."""
    text = _set_variable(text, "GRUB_TIMEOUT", "0")
    text = _set_variable(text, "GRUB_TERMINAL", '"console serial"')
    text = _set_variable(text, "GRUB_SERIAL_COMMAND", '"serial --unit=0 --speed=115200"')
    found = re.search(r'(?m)^\s*GRUB_CMDLINE_LINUX="([^"]*)"\s*$', text)
    current = found.group(1) if found else ""
    if "console=ttyS" not in current:
        current = f"{current} {CONSOLE_ARGUMENTS}".strip()
    return _set_variable(text, "GRUB_CMDLINE_LINUX", f'"{current}"')


def datasource_names(kinds: str) -> list[str]:
    """cloud-init's names of the ``--datasource`` value ``kinds`` (``nocloud,ec2``), in order."""
    return [DATASOURCES[kind] for kind in datasource_kinds(kinds)]


def datasource_config(kinds: str) -> str:
    names = datasource_names(kinds)
    what = "the one datasource" if len(names) == 1 else "the datasources"
    text = (
        f"# imagewright prepare --boot-tuning: {what} this image's instances see\n"
        f"datasource_list: [ {', '.join(names)}, None ]\n"
    )
    if "Ec2" in names:
        text += "datasource:\n  Ec2:\n    strict_id: false\n"
    return text


def _config_files(ctx: PrepareContext, files: tuple[str, ...], directory: str, suffix: str) -> list[str]:
    found = [path for path in files if ctx.guest.is_file(path)]
    if ctx.guest.is_dir(directory):
        names = sorted(e.name for e in ctx.guest.listdir(directory) if e.name.endswith(suffix))
        found += [f"{directory}/{name}" for name in names if ctx.guest.is_file(f"{directory}/{name}")]
    return found


def _tune_ssh_key_types(ctx: PrepareContext, notes: list[str]) -> None:
    """cloud-init makes only the host key types sshd uses (module docstring)."""
    guest = ctx.guest
    sshd = _config_files(ctx, SSHD_CONFIGS, SSHD_CONFIG_DIR, ".conf")
    if any(_DSA_HOST_KEY.search(guest.read_text(path)) for path in sshd):
        notes.append("cloud-init's SSH key types left alone (sshd uses a DSA host key)")
        return
    cloud = _config_files(ctx, ("/etc/cloud/cloud.cfg",), CLOUD_CONFIG_DIR, ".cfg")
    if any(_GENKEYTYPES.search(guest.read_text(path)) for path in cloud if path != SSH_KEYS_CONF):
        notes.append("cloud-init's SSH key types left alone (its configuration sets ssh_genkeytypes)")
        return
    deferred = _has_systemd(ctx)
    types = SSH_KEY_TYPES_DEFERRED if deferred else SSH_KEY_TYPES
    wanted = ssh_keys_text(types)
    current = guest.read_text(SSH_KEYS_CONF) if guest.is_file(SSH_KEYS_CONF) else None
    if current != wanted:
        ctx.mkdir(CLOUD_CONFIG_DIR)
        ctx.write(SSH_KEYS_CONF, wanted.encode(), detail=f"ssh_genkeytypes [{', '.join(types)}]")
    if deferred:
        current = guest.read_text(SSH_RSA_UNIT) if guest.is_file(SSH_RSA_UNIT) else None
        if current != SSH_RSA_UNIT_TEXT:
            ctx.mkdir(MASKED_DIRECTORY)
            ctx.write(SSH_RSA_UNIT, SSH_RSA_UNIT_TEXT.encode(), detail="the RSA host key, after the boot")
        ctx.mkdir(SSH_RSA_UNIT_LINK.rsplit("/", 1)[0])
        ctx.symlink(SSH_RSA_UNIT, SSH_RSA_UNIT_LINK, detail="enabled")


def _has_systemd(ctx: PrepareContext) -> bool:
    """The guest boots systemd (its manager binary is where Debian, Ubuntu, Fedora put it)."""
    return any(ctx.guest.is_file(f"{directory}/systemd") for directory in _SYSTEMD_DIRECTORIES)


def run(ctx: PrepareContext) -> None:
    guest = ctx.guest
    notes: list[str] = []
    configs = [path for path in GRUB_CONFIGS if guest.is_file(path)]
    for path in configs:
        old = guest.read_text(path)
        new, changes = tuned_grub_cfg(old)
        if new != old:
            ctx.write(path, new.encode("utf-8", "surrogateescape"), detail=", ".join(changes))
    if not configs:
        notes.append("no grub.cfg")
    if guest.is_file(GRUB_DEFAULTS):
        old = guest.read_text(GRUB_DEFAULTS)
        new = tuned_grub_defaults(old)
        if new != old:
            ctx.write(GRUB_DEFAULTS, new.encode("utf-8", "surrogateescape"), detail="kept by update-grub")
    kind = ctx.options.boot_datasource
    if guest.is_dir(CLOUD_DIR):
        if kind is None:
            notes.append("cloud-init datasources left as they are (no --datasource)")
        else:
            wanted = datasource_config(kind)
            current = guest.read_text(DATASOURCE_CONF) if guest.is_file(DATASOURCE_CONF) else None
            if current != wanted:
                ctx.mkdir("/etc/cloud/cloud.cfg.d")
                names = ", ".join(datasource_names(kind))
                ctx.write(DATASOURCE_CONF, wanted.encode(), detail=f"datasource_list [{names}, None]")
        _tune_ssh_key_types(ctx, notes)
    for unit in WAIT_ONLINE_UNITS:
        if any(guest.is_file(f"{directory}/{unit}") for directory in _UNIT_DIRECTORIES):
            ctx.mkdir(MASKED_DIRECTORY)
            ctx.symlink(
                "/dev/null", f"{MASKED_DIRECTORY}/{unit}", detail="masked: no boot waits for the network"
            )
    if notes:
        ctx.note = "; ".join(notes)


OPERATION = Operation(
    name="boot-tuning",
    default=False,
    summary="GRUB timeout 0, serial console, cloud-init's datasource pinned, no DSA host key, the RSA one "
    "after the boot, no wait-online",
    why="only when asked (publish asks): it changes how the guest boots, for the first boot's sake",
    run=run,
    needs="--boot-tuning",
)
