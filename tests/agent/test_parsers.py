"""The agent's own readers, called one by one through its library mode (IMAGEWRIGHT_AGENT_LIB=1).

The YAML and JSON readers are awk programs; they are checked against PyYAML, Python's json and
jq on generated documents (hypothesis), under the host's awk and busybox awk (test_awk.py runs
the .awk files on their own under busybox awk, mawk and gawk). The raw label reader is checked
against blkid on media made by imagewright's builders.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.agent.media import build_image
from tests.agent.sandbox import SHELLS, host_path, lib_call
from tests.fixtures.tools import blkid, which

from imagewright.agent import instance_state_dir
from imagewright.metadata.instance import InstanceDescription, SshPublicKey
from imagewright.metadata.network import parse_network_spec

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def flatten(value: Any, path: str = "") -> list[str]:
    """The reference: what the agent's readers must print for a parsed document."""
    if isinstance(value, dict):
        return [line for k, v in value.items() for line in flatten(v, f"{path}/{k}" if path else str(k))]
    if isinstance(value, list):
        return [line for i, v in enumerate(value) for line in flatten(v, f"{path}/{i}" if path else str(i))]
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    return [f"{path}\t{esc(text)}"]


def awk_flatten(program: str, document: Path, awk_path: str, agent: Path) -> subprocess.CompletedProcess[str]:
    """Run one of the agent's awk programs ($AWK_YAML / $AWK_JSON) on a file, with a given awk."""
    return subprocess.run(
        ["sh", "-c", f'. "{agent}"; awk "$AWK_COMMON{program}" "$1"', "sh", str(document)],
        env={"PATH": awk_path, "IMAGEWRIGHT_AGENT_LIB": "1", "LC_ALL": "C"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def awks(busybox_tools: Path) -> dict[str, str]:
    return {"host awk": host_path(), "busybox": f"{busybox_tools}"}


# --- JSON ------------------------------------------------------------------------------------

json_text = st.text(
    alphabet=st.sampled_from([*list("abcXYZ019 ._-/:#'\"\\{}[],\t\n\r"), "é", "ß", "中"]), max_size=12
)
json_keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,7}", fullmatch=True)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10**12), 10**12), json_text)
json_documents = st.dictionaries(
    json_keys,
    st.recursive(
        json_scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(json_keys, inner, max_size=3),
        max_leaves=12,
    ),
    max_size=5,
)


@FAST
@given(document=json_documents, indent=st.sampled_from([None, 2]))
def test_json_reader_matches_python(
    document: dict[str, Any], indent: int | None, agent_file: Path, busybox_tools: Path, tmp_path: Path
) -> None:
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(document, indent=indent, ensure_ascii=False))
    for name, awk_path in awks(busybox_tools).items():
        result = awk_flatten("$AWK_JSON", path, awk_path, agent_file)
        assert result.returncode == 0, (name, result.stderr)
        assert result.stdout.splitlines() == flatten(document), name


@FAST
@given(document=json_documents.filter(bool), data=st.data())
def test_json_reader_refuses_every_truncation(
    document: dict[str, Any], data: st.DataObject, agent_file: Path, busybox_tools: Path, tmp_path: Path
) -> None:
    text = json.dumps(document, ensure_ascii=False)
    cut = data.draw(st.integers(0, len(text) - 1))
    path = tmp_path / "cut.json"
    path.write_text(text[:cut])
    for name, awk_path in awks(busybox_tools).items():
        assert awk_flatten("$AWK_JSON", path, awk_path, agent_file).returncode == 1, name


def test_json_reader_agrees_with_jq_on_builder_output(
    agent_file: Path, busybox_tools: Path, tmp_path: Path, ssh_keys: tuple[SshPublicKey, ...]
) -> None:
    from imagewright.metadata.configdrive import meta_data, network_data

    instance = InstanceDescription(
        instance_id="i-0123456789abcdef0",
        hostname="web1.example.com",
        ssh_keys=ssh_keys,
        network=parse_network_spec("static:192.0.2.10/24,192.0.2.1,192.0.2.53"),
    )
    for document in (meta_data(instance), network_data(instance)):
        path = tmp_path / "doc.json"
        path.write_text(json.dumps(document, indent=2))
        jq = subprocess.run(
            [which("sh"), "-c", f'. "{agent_file}"; flatten_json "$1"', "sh", str(path)],
            env={"PATH": host_path(), "IMAGEWRIGHT_AGENT_LIB": "1"},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for name, awk_path in awks(busybox_tools).items():
            assert awk_flatten("$AWK_JSON", path, awk_path, agent_file).stdout == jq, name
        assert jq.splitlines() == flatten(document)


# --- YAML ------------------------------------------------------------------------------------

yaml_text = st.text(
    alphabet=st.sampled_from([*list("abcXYZ019 ._-/:#'\"\\{}[],&*!|>%@`?"), "é", "中"]), max_size=14
)
yaml_keys = st.from_regex(r"[a-z][a-z0-9_-]{0,7}", fullmatch=True)
yaml_documents = st.dictionaries(
    yaml_keys,
    st.recursive(
        yaml_text,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(yaml_keys, inner, max_size=3),
        max_leaves=12,
    ),
    min_size=1,
    max_size=5,
)


@FAST
@given(document=yaml_documents, flow=st.sampled_from([False, None]), indent=st.sampled_from([2, 4]))
def test_yaml_reader_matches_pyyaml(
    document: dict[str, Any],
    flow: bool | None,
    indent: int,
    agent_file: Path,
    busybox_tools: Path,
    tmp_path: Path,
) -> None:
    text = yaml.safe_dump(document, default_flow_style=flow, allow_unicode=True, width=10_000, indent=indent)
    path = tmp_path / "doc.yaml"
    path.write_text(text)
    expected = flatten(yaml.safe_load(text))
    for name, awk_path in awks(busybox_tools).items():
        result = awk_flatten("$AWK_YAML", path, awk_path, agent_file)
        assert result.returncode == 0, (name, result.stderr)
        assert result.stdout.splitlines() == expected, (name, text)


YAML_CASES = {
    # cloud-init style: items at the key's own column, comments, quotes, a block scalar
    "instance-id: iid-1 # the id\n"
    "local-hostname: 'it''s'\n"
    "public-keys:\n"
    "- ssh-ed25519 AAAA a@b # not a comment? yes it is\n"
    '- "ssh-rsa BBBB c # d"\n'
    "network-interfaces: |\n"
    "  auto eth0\n"
    "\n"
    "  iface eth0 inet dhcp\n"
    "after: x\n": [
        "instance-id\tiid-1",
        "local-hostname\tit's",
        "public-keys/0\tssh-ed25519 AAAA a@b",
        "public-keys/1\tssh-rsa BBBB c # d",
        "network-interfaces\tauto eth0\\n\\niface eth0 inet dhcp",
        "after\tx",
    ],
    # netplan v1 list of mappings, flow lists, document marker
    "---\nversion: 1\nconfig:\n  - type: physical\n    name: eth0\n    subnets:\n"
    "      - type: static\n        address: 10.0.0.5/24\n        dns_nameservers: [10.0.0.1, '10.0.0.2']\n"
    "  - type: nameserver\n    address: [1.1.1.1]\n": [
        "version\t1",
        "config/0/type\tphysical",
        "config/0/name\teth0",
        "config/0/subnets/0/type\tstatic",
        "config/0/subnets/0/address\t10.0.0.5/24",
        "config/0/subnets/0/dns_nameservers/0\t10.0.0.1",
        "config/0/subnets/0/dns_nameservers/1\t10.0.0.2",
        "config/1/type\tnameserver",
        "config/1/address/0\t1.1.1.1",
    ],
}


@pytest.mark.parametrize("text", list(YAML_CASES))
def test_yaml_reader_cases(text: str, agent_file: Path, busybox_tools: Path, tmp_path: Path) -> None:
    path = tmp_path / "doc.yaml"
    path.write_text(text)
    for name, awk_path in awks(busybox_tools).items():
        assert awk_flatten("$AWK_YAML", path, awk_path, agent_file).stdout.splitlines() == YAML_CASES[text], (
            name
        )


@pytest.mark.parametrize("shell", SHELLS)
def test_flat_lookups_decode_values(
    shell: str, agent_file: Path, busybox_tools: Path, tmp_path: Path
) -> None:
    flat = tmp_path / "flat"
    flat.write_text("a/b\tone\\ttwo\\nthree\\\\four\na/c/0\tx\na/c/1\ty\na/d/k\tz\nab\tnot-under-a\n")
    result = lib_call(
        shell,
        agent_file,
        f'flat_get "{flat}" a/b; echo "|"; flat_list "{flat}" a/c; '
        f'flat_keys "{flat}" a; flat_under "{flat}" a/d',
        tools_dir=busybox_tools,
    )
    assert result.stdout == "one\ttwo\nthree\\four\n|\nx\ny\nb\nc\nd\nz\n"


# --- small helpers -------------------------------------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
def test_netmask_and_address_helpers(shell: str, agent_file: Path, busybox_tools: Path) -> None:
    masks = {
        "255.255.255.0": "24",
        "/16": "16",
        "8": "8",
        " netmask 255.255.252.0": "22",
        "255.255.255.255": "32",
        "0.0.0.0": "0",
        "255.0.255.0": "bad",
        "255.255.255.1": "bad",
        "33": "bad",
        "": "bad",
        "abc": "bad",
    }
    script = "".join(f'mask_to_prefix "{m}" || echo bad\n' for m in masks)
    script += "".join(f"prefix_to_mask {p}\n" for p in (24, 22, 32, 0, 1))
    addresses = {
        "10.0.0.1": "ok",
        "256.1.1.1": "no",
        "1.2.3": "no",
        "1.2.3.4.5": "no",
        "01.2.3.4": "ok",
        "a.b.c.d": "no",
    }
    script += "".join(f'is_ipv4 "{a}" && echo ok || echo no\n' for a in addresses)
    result = lib_call(shell, agent_file, script, tools_dir=busybox_tools)
    assert result.stdout.splitlines() == [
        *masks.values(),
        "255.255.255.0",
        "255.255.252.0",
        "255.255.255.255",
        "0.0.0.0",
        "128.0.0.0",
        *addresses.values(),
    ]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ids=st.lists(
        st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40),
        min_size=1,
        max_size=10,
    )
)
def test_instance_id_cleanup_matches_python(ids: list[str], agent_file: Path, busybox_tools: Path) -> None:
    # each id in single quotes (POSIX: every byte literal, a quote written '\\'')
    script = "".join("echo \"$(clean_instance_id '" + i.replace("'", "'\\''") + "')\"\n" for i in ids)
    for shell in ("busybox", "dash"):
        result = lib_call(shell, agent_file, script, tools_dir=busybox_tools)
        got = result.stdout.split("\n")[: len(ids)]
        assert got == [instance_state_dir(i).rsplit("/", 1)[1] for i in ids], shell


@pytest.mark.parametrize("shell", SHELLS)
def test_hostname_cleanup(shell: str, agent_file: Path, busybox_tools: Path) -> None:
    names = {
        "web1": "web1",
        "  Web1.Example.COM \r": "Web1.Example.COM",
        "bad_name;rm -rf /": "bad-name-rm--rf",
        "-.lead.trail.-": "lead.trail",
        "....": "",
    }
    script = "".join("echo \"$(clean_hostname '" + n.replace("'", "'\\''") + "')\"\n" for n in names)
    result = lib_call(shell, agent_file, script, tools_dir=busybox_tools)
    assert result.stdout.split("\n")[: len(names)] == list(names.values())


# --- labels on real media ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def label_media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("labels")
    instance = InstanceDescription(instance_id="i-0123456789abcdef0", hostname="label-test")
    return {
        kind: build_image(kind, instance, directory)
        for kind in ("nocloud", "configdrive", "opennebula", "wakame")
    }


EXPECTED_LABELS = {
    "nocloud": "iso9660 cidata",
    "configdrive": "iso9660 config-2",
    "opennebula": "iso9660 CONTEXT",
    "wakame": "vfat METADATA",
}


@pytest.mark.parametrize("shell", SHELLS)
def test_raw_label_reader_agrees_with_blkid(
    shell: str, label_media: dict[str, Path], agent_file: Path, busybox_tools: Path
) -> None:
    for kind, image in label_media.items():
        result = lib_call(shell, agent_file, f'raw_label "{image}"', tools_dir=busybox_tools)
        assert result.stdout.strip() == EXPECTED_LABELS[kind]
        probe = blkid(image)
        assert f"{probe['TYPE']} {probe['LABEL']}" == EXPECTED_LABELS[kind]


@pytest.mark.parametrize("shell", SHELLS)
def test_find_label_in_a_sandbox_and_discovery_in_dry_run(
    shell: str, label_media: dict[str, Path], agent_file: Path, busybox_tools: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    (root / "dev").mkdir(parents=True)
    (root / "proc").mkdir()
    (root / "dev/sr0").symlink_to(label_media["nocloud"])
    (root / "dev/vdb").symlink_to(label_media["wakame"])
    (root / "dev/vda").write_bytes(b"\0" * 65536)
    (root / "proc/partitions").write_text(
        "major minor  #blocks  name\n\n 254        0      64 vda\n 254       16   16384 vdb\n"
    )
    work = tmp_path / "work"
    work.mkdir()
    result = lib_call(
        shell,
        agent_file,
        'for l in cidata METADATA config-2 CONTEXT; do echo "$l=$(find_label $l)"; done',
        root=root,
        tools_dir=busybox_tools,
        work=work,
    )
    assert result.stdout.splitlines() == [
        f"cidata={root}/dev/sr0",
        f"METADATA={root}/dev/vdb",
        "config-2=",
        "CONTEXT=",
    ]

    # the whole agent, no medium given: it finds the seed, and in dry-run does not mount it
    for d in ("etc", "run", "tmp"):
        (root / d).mkdir(exist_ok=True)
    (root / "etc/imagewright").mkdir()
    (root / "etc/imagewright/agent.conf").write_text("SOURCES=nocloud,wakame\n")
    run = subprocess.run(
        [*(["busybox", "sh"] if shell == "busybox" else [shell]), str(agent_file)],
        env={
            "PATH": str(busybox_tools) if shell == "busybox" else host_path(),
            "IMAGEWRIGHT_AGENT_ROOT": str(root),
            "IMAGEWRIGHT_AGENT_DRYRUN": "1",
        },
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert f"imagewright-agent: found a nocloud medium: {root}/dev/sr0 (label cidata)" in run.stdout
    assert f"imagewright-agent: dry-run: mount -r -t iso9660 {root}/dev/sr0 " in run.stdout
    assert f"imagewright-agent: found a wakame medium: {root}/dev/vdb (label METADATA)" in run.stdout
    assert (
        run.stdout.splitlines()[-1]
        == "imagewright-agent: ready instance-id=none hostname=localhost source=none"
    )
