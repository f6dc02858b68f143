"""The agent's step runner: each step's frequency, its marker, failures, and markers before sync.

The runner is driven two ways. Through the library mode (IMAGEWRIGHT_AGENT_LIB=1) with a step
table of the test's own — each call of :func:`boot` is one boot: a new shell that opens the
instance, runs the steps and closes the instance, exactly as ``main`` does — under busybox sh,
dash and bash. And through the whole agent in a sandbox, where a real step fails, old-style
``done.*`` markers are taken over, and (for real, in private UTS and network namespaces) the
markers are checked to be on disk when the agent calls ``sync`` before its ready line.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.agent.sandbox import SHELLS, Sandbox, host_path, lib_call
from tests.fixtures.tools import which

from imagewright.agent import STATE_DIR

#: Step functions for the test tables: each one notes that it ran in $R/ran.
FUNCTIONS = r"""
note() { echo "$*" >>"$R/ran"; }
every_boot() { note every-boot; }
per_instance() { note "per-instance $INSTANCE_ID"; }
once_ever() { note once; }
"""

STEPS = """
each  per-boot      -  every_boot
inst  per-instance  -  per_instance
one   once          -  once_ever
"""


class Machine:
    """A sandbox root that the library-mode agent boots again and again."""

    def __init__(self, shell: str, agent: Path, tools: Path, tmp_path: Path) -> None:
        self.shell = shell
        self.agent = agent
        self.tools = tools
        self.root = tmp_path / "root"
        (self.root / "var/log").mkdir(parents=True)  # as main makes it, for the agent's log
        self.work = tmp_path / "work"
        self.work.mkdir()

    @property
    def state(self) -> Path:
        return self.root / STATE_DIR.lstrip("/")

    def boot(self, instance_id: str | None, steps: str = STEPS, functions: str = "") -> list[str]:
        """One boot with this instance-id (None: no source answered); the agent's messages."""
        source = f"SOURCE=nocloud CTX_ID='{instance_id}'" if instance_id else "SOURCE=none"
        commands = (
            f"{FUNCTIONS}{functions}\nAGENT_STEPS='{steps}'\n{source} CTX_HOST=\n"
            "open_instance\nrun_steps\nclose_instance\n"
        )
        result = lib_call(
            self.shell, self.agent, commands, root=self.root, tools_dir=self.tools, work=self.work
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stderr == "", result.stderr
        prefix = "imagewright-agent: "
        return [line[len(prefix) :] for line in result.stdout.splitlines() if line.startswith(prefix)]

    def ran(self) -> list[str]:
        """Every note of every boot so far, and empties the list."""
        path = self.root / "ran"
        if not path.exists():
            return []
        lines = path.read_text().splitlines()
        path.unlink()
        return lines

    def markers(self) -> set[str]:
        return {
            str(p.relative_to(self.state)) for p in self.state.rglob("*") if p.parent.name in ("sem", ".sem")
        }


@pytest.fixture(params=SHELLS)
def machine(request: pytest.FixtureRequest, agent_file: Path, busybox_tools: Path, tmp_path: Path) -> Machine:
    return Machine(request.param, agent_file, busybox_tools, tmp_path)


def test_each_frequency_runs_as_declared(machine: Machine) -> None:
    first = machine.boot("i-a")
    assert machine.ran() == ["every-boot", "per-instance i-a", "once"]
    assert "instance i-a: first boot" in first
    assert machine.markers() == {"i-a/sem/inst", "i-a/sem/instance", ".sem/one"}

    again = machine.boot("i-a")
    assert machine.ran() == ["every-boot"]
    assert "instance i-a: known; per-instance steps were done before" in again

    clone = machine.boot("i-b")
    assert machine.ran() == ["every-boot", "per-instance i-b"]
    assert "instance i-b: new (previous instance: i-a)" in clone

    # no source at all: no instance, so no per-instance step; the per-boot step still runs
    machine.boot(None)
    assert machine.ran() == ["every-boot"]
    machine.boot("i-b")
    assert machine.ran() == ["every-boot"]
    assert machine.markers() == {
        "i-a/sem/inst",
        "i-a/sem/instance",
        "i-b/sem/inst",
        "i-b/sem/instance",
        ".sem/one",
    }
    assert (machine.state / ".last-instance-id").read_text() == "i-b\n"


FLAKY = r"""
flaky() {
    [ -e "$INSTANCE_STATE/sem/flaky" ] && note "flaky runs with its marker written"
    [ -e "$R/broken" ] && return 3
    note "flaky done"
}
after() { note after; }
boot_check() { note boot-check; return 5; }
"""

FLAKY_STEPS = """
flaky       per-instance  -  flaky
after       per-instance  -  after
boot-check  per-boot      -  boot_check
"""


def test_a_failed_step_keeps_no_marker_runs_again_and_does_not_stop_the_others(machine: Machine) -> None:
    (machine.root / "broken").touch()

    first = machine.boot("i-a", FLAKY_STEPS, FLAKY)

    assert machine.ran() == ["flaky runs with its marker written", "after", "boot-check"]
    assert "step flaky failed (status 3); it runs again at the next boot" in first
    assert "step boot-check failed (status 5)" in first
    assert machine.markers() == {"i-a/sem/after", "i-a/sem/instance"}

    machine.boot("i-a", FLAKY_STEPS, FLAKY)
    assert machine.ran() == ["flaky runs with its marker written", "boot-check"]

    (machine.root / "broken").unlink()
    machine.boot("i-a", FLAKY_STEPS, FLAKY)
    assert machine.ran() == ["flaky runs with its marker written", "flaky done", "boot-check"]
    assert "i-a/sem/flaky" in machine.markers()

    fine = machine.boot("i-a", FLAKY_STEPS, FLAKY)
    assert machine.ran() == ["boot-check"]
    assert not any(m.startswith("step flaky") for m in fine)


def test_a_step_that_does_not_apply_is_neither_run_nor_marked(machine: Machine) -> None:
    functions = 'has_thing() { [ -e "$R/thing" ]; }\nthing() { note thing; }\n'
    steps = "thing per-instance has_thing thing\nlater once has_thing thing\n"

    machine.boot("i-a", steps, functions)
    assert machine.ran() == []
    assert machine.markers() == {"i-a/sem/instance"}

    (machine.root / "thing").touch()  # the same instance's data has it at a later boot
    machine.boot("i-a", steps, functions)
    machine.boot("i-a", steps, functions)
    assert machine.ran() == ["thing", "thing"]  # once per instance, and once ever
    assert machine.markers() == {"i-a/sem/instance", "i-a/sem/thing", ".sem/later"}


def test_a_step_whose_marker_cannot_be_written_does_not_run(machine: Machine) -> None:
    # sem/ is a file: no marker can go there, whatever the user (root ignores modes)
    sem = machine.state / "i-a/sem"
    sem.parent.mkdir(parents=True)
    sem.write_text("not a directory\n")

    messages = machine.boot("i-a")

    assert machine.ran() == ["every-boot", "once"]
    assert f"step inst: cannot write its marker {STATE_DIR}/i-a/sem/inst; not run" in messages


def test_the_agents_table_names_its_own_functions(agent_file: Path, busybox_tools: Path) -> None:
    check = r"""
while read -r name frequency when function; do
    [ -n "$name" ] || continue
    case $frequency in per-instance | per-boot | once) ;; *) echo "$name: frequency $frequency" ;; esac
    for f in $when $function; do
        [ "$f" = - ] || command -v "$f" >/dev/null || echo "$name: no function $f"
    done
    echo "step $name"
done <<EOF
$AGENT_STEPS
EOF
"""
    for shell in SHELLS:
        result = lib_call(shell, agent_file, check, tools_dir=busybox_tools)
        assert result.stdout.splitlines() == [
            f"step {name}"
            for name in (
                "hostname",
                "ssh-keys",
                "running-hostname",
                "network",
                "extra-hosts",
                "host-keys",
                "missing-host-keys",
                "grow-root",
                "init-scripts",
                "user-data",
            )
        ], (shell, result.stdout, result.stderr)


# --- the whole agent -----------------------------------------------------------------------------

USER_DATA = '#!/bin/sh\necho ran >>"$IMAGEWRIGHT_AGENT_ROOT/tmp/user-data-runs"\n'
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl steps@x"


def seed(tmp_path: Path, instance_id: str, hostname: str) -> Path:
    """A NoCloud seed directory with a hostname, a key and a user-data script."""
    media = tmp_path / hostname
    media.mkdir()
    (media / "meta-data").write_text(
        f"instance-id: {instance_id}\nlocal-hostname: {hostname}\npublic-keys:\n  - {KEY}\n"
    )
    (media / "user-data").write_text(USER_DATA)
    return media


def sem(box: Sandbox, instance_id: str) -> set[str]:
    directory = box.state(instance_id) / "sem"
    return {p.name for p in directory.iterdir()} if directory.is_dir() else set()


@pytest.mark.parametrize("shell", SHELLS)
def test_a_failed_ssh_keys_step_is_retried_and_user_data_still_runs(
    shell: str, make_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    box = make_sandbox(conf="SOURCES=nocloud\nHOST_KEYS=missing\n")
    box.write("root/.ssh", "a file where the directory should be\n")
    media = seed(tmp_path, "i-retry", "retry")

    first = box.run(shell, media=media)

    assert "ssh: could not create /root/.ssh/authorized_keys" in first.messages
    assert "step ssh-keys failed (status 1); it runs again at the next boot" in first.messages
    assert box.read("tmp/user-data-runs") == "ran\n"  # the steps after it ran
    assert sem(box, "i-retry") == {"hostname", "user-data", "instance"}
    assert first.ready.instance_id == "i-retry"

    (box.root / "root/.ssh").unlink()
    second = box.run(shell, media=media)

    assert box.read("root/.ssh/authorized_keys") == KEY + "\n"
    assert "step ssh-keys failed" not in " ".join(second.messages)
    assert box.read("tmp/user-data-runs") == "ran\n"
    assert sem(box, "i-retry") == {"hostname", "ssh-keys", "user-data", "instance"}


@pytest.mark.parametrize("shell", SHELLS)
def test_markers_of_an_older_agent_are_taken_over(
    shell: str, make_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    box = make_sandbox(conf="SOURCES=nocloud\n")  # HOST_KEYS per-instance
    old = box.state("i-old")
    old.mkdir(parents=True)
    for name in ("hostname", "ssh-keys", "host-keys", "init-script", "user-data", "instance"):
        (old / f"done.{name}").touch()
    box.write("var/lib/imagewright-agent/.last-instance-id", "i-old\n")
    host_key = box.read("etc/ssh/ssh_host_ed25519_key")

    run = box.run(shell, media=seed(tmp_path, "i-old", "renamed"))

    assert "instance i-old: known; per-instance steps were done before" in run.messages
    assert sem(box, "i-old") == {"hostname", "ssh-keys", "host-keys", "init-scripts", "user-data", "instance"}
    assert not list(old.glob("done.*"))
    # nothing per-instance ran again: no user-data, same name, same keys
    assert not (box.root / "tmp/user-data-runs").exists()
    assert box.read("etc/hostname") == "template\n"
    assert not (box.root / "root/.ssh/authorized_keys").exists()
    assert box.read("etc/ssh/ssh_host_ed25519_key") == host_key


@pytest.mark.parametrize("shell", ["dash", "bash"])
def test_markers_are_on_disk_when_the_agent_syncs_before_its_ready_line(
    shell: str, make_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    """For real (no dry-run), in private UTS and network namespaces: a ``sync`` first in PATH
    lists the agent's state when it is called. busybox sh is left out: it runs its own sync
    applet whatever PATH says, so it cannot be watched this way (its runner is the same code)."""
    box = make_sandbox(conf="SOURCES=nocloud\nHOST_KEYS=missing\nGROW_ROOT=no\nDHCP=no\n")
    record = tmp_path / "at-sync"
    spy = tmp_path / "spy"
    spy.mkdir()
    (spy / "sync").write_text(
        "#!/bin/sh\n"
        'cd "$IMAGEWRIGHT_AGENT_ROOT/var/lib/imagewright-agent" && '
        'find . -type f -exec cksum {} + | sort >"$SYNC_RECORD"\n'
    )
    (spy / "sync").chmod(0o755)

    run = box.run(
        shell,
        media=seed(tmp_path, "i-sync", "synced"),
        dryrun=False,
        env={"PATH": f"{spy}:{host_path()}", "SYNC_RECORD": str(record)},
        prefix=[which("unshare"), "--uts", "--net"],
    )

    assert run.returncode == 0, run.stderr
    assert run.lines[-1] == "imagewright-agent: ready instance-id=i-sync hostname=synced source=nocloud"
    at_sync = record.read_text()
    after = subprocess.run(
        ["sh", "-c", "find . -type f -exec cksum {} + | sort"],
        cwd=box.root / STATE_DIR.lstrip("/"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert at_sync == after  # nothing of the state was written after the sync
    names = {line.rsplit(" ", 1)[1] for line in at_sync.splitlines()}
    assert {
        "./i-sync/sem/hostname",
        "./i-sync/sem/ssh-keys",
        "./i-sync/sem/user-data",
        "./i-sync/sem/instance",
        "./i-sync/user-data.status",
        "./.last-instance-id",
    } <= names
    assert box.read("tmp/user-data-runs") == "ran\n"
