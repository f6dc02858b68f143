"""Accelerator choice: the rules on fake host trees, the probes, and this machine's answer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.fixtures.tools import run

from imagewright.compute import accel
from imagewright.compute.accel import (
    PROBE_BOOT_SECTOR,
    PROBE_BOOT_SECTOR_SOURCE,
    AccelDecision,
    ProbeOutcome,
    decide_accelerator,
)
from imagewright.errors import InvalidArgumentError


def _host(tmp_path: Path, *, kvm: bool = True, pvm: bool = False) -> Path:
    root = tmp_path / "host"
    (root / "dev").mkdir(parents=True)
    (root / "sys" / "module" / "kvm").mkdir(parents=True)
    if kvm:
        (root / "dev" / "kvm").write_bytes(b"")
    if pvm:
        (root / "sys" / "module" / "kvm_pvm" / "parameters").mkdir(parents=True)
    return root


def _must_not_probe() -> ProbeOutcome:
    raise AssertionError("the rules alone should have decided")


def test_no_dev_kvm_means_tcg(tmp_path: Path) -> None:
    decision = decide_accelerator(host_root=_host(tmp_path, kvm=False), environ={}, probe=_must_not_probe)
    assert decision == AccelDecision("tcg", "no /dev/kvm on this host")


def test_pvm_host_means_tcg_without_probing(tmp_path: Path) -> None:
    decision = decide_accelerator(host_root=_host(tmp_path, pvm=True), environ={}, probe=_must_not_probe)
    assert decision.accelerator == "tcg"
    assert "PVM" in decision.reason and "kvm_pvm" in decision.reason
    assert not decision.probed


def test_unusable_dev_kvm_means_tcg(tmp_path: Path) -> None:
    root = _host(tmp_path)
    os.chmod(root / "dev" / "kvm", 0)
    if os.access(root / "dev" / "kvm", os.W_OK):  # root ignores modes: use a dangling name instead
        (root / "dev" / "kvm").unlink()
        (root / "dev" / "kvm").symlink_to(root / "nowhere")
    decision = decide_accelerator(host_root=root, environ={}, probe=_must_not_probe)
    assert decision.accelerator == "tcg"


@pytest.mark.parametrize(("ok", "expected"), [(True, "kvm"), (False, "tcg")])
def test_plain_kvm_host_is_decided_by_the_probe(tmp_path: Path, ok: bool, expected: str) -> None:
    calls: list[int] = []

    def probe() -> ProbeOutcome:
        calls.append(1)
        return ProbeOutcome(ok, "kernel probe hung" if not ok else "both probes ran")

    decision = decide_accelerator(host_root=_host(tmp_path), environ={}, probe=probe)
    assert calls == [1]
    assert decision.accelerator == expected
    assert decision.probed
    assert ("hung" in decision.reason) == (not ok)


@pytest.mark.parametrize("value", ["tcg", "kvm", " KVM "])
def test_environment_override_wins(tmp_path: Path, value: str) -> None:
    decision = decide_accelerator(
        host_root=_host(tmp_path, pvm=True), environ={"IMAGEWRIGHT_ACCEL": value}, probe=_must_not_probe
    )
    assert decision.accelerator == value.strip().lower()
    assert "IMAGEWRIGHT_ACCEL" in decision.reason


def test_environment_override_must_be_known(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="IMAGEWRIGHT_ACCEL"):
        decide_accelerator(host_root=_host(tmp_path), environ={"IMAGEWRIGHT_ACCEL": "hvf"})


def test_this_machine_uses_tcg_because_of_pvm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMAGEWRIGHT_ACCEL", raising=False)
    assert Path("/sys/module/kvm_pvm").exists(), "ENVIRONMENT.md: these machines run PVM"
    decision = decide_accelerator(probe=_must_not_probe)
    assert decision.accelerator == "tcg"
    assert "PVM" in decision.reason


def test_probe_result_is_cached_per_host_boot(tmp_path: Path) -> None:
    cache = tmp_path / "accel.json"
    decision = AccelDecision("kvm", "a probe boot under KVM succeeded", probed=True)
    accel._write_cached(cache, "boot-1", decision)
    cached = accel._read_cached(cache, "boot-1")
    assert cached is not None and cached.accelerator == "kvm" and "cached" in cached.reason
    assert accel._read_cached(cache, "boot-2") is None  # the host rebooted: probe again
    cache.write_text("{not json")
    assert accel._read_cached(cache, "boot-1") is None


def test_boot_sector_bytes_are_what_gnu_as_assembles(tmp_path: Path) -> None:
    source = tmp_path / "probe.S"
    source.write_text(PROBE_BOOT_SECTOR_SOURCE)
    run("as", "--64", "-o", tmp_path / "probe.o", source)
    run("objcopy", "-O", "binary", tmp_path / "probe.o", tmp_path / "probe.bin")
    assert (tmp_path / "probe.bin").read_bytes() == PROBE_BOOT_SECTOR
    assert len(PROBE_BOOT_SECTOR) == 512 and PROBE_BOOT_SECTOR[510:] == b"\x55\xaa"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_both_probes_pass_under_tcg(testguest_rootfs: object) -> None:
    """The probes themselves work: under TCG the boot sector and the cached kernel both exit 99."""
    outcome = accel.run_kvm_probes(accelerator="tcg", timeout=120)
    assert outcome.ok, outcome.detail
    assert "kernel" in outcome.detail
