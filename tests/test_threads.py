"""CPU threads from the machine (issue 16): the cgroup quota, affinity, torchrun's processes, overrides."""
from __future__ import annotations

import os

import pytest

from bdgf_core.devices import cgroup_cpus, cpu_threads
from bdgf_core.errors import BdgfError

AFFINITY = len(os.sched_getaffinity(0))


def _v2(tmp_path, text: str) -> str:
    (tmp_path / "cpu.max").write_text(text)
    return str(tmp_path)


def test_cgroup_v2_quota_and_no_quota(tmp_path) -> None:
    assert cgroup_cpus(_v2(tmp_path, "150000 100000\n")) == pytest.approx(1.5)
    assert cgroup_cpus(_v2(tmp_path, "max 100000\n")) is None


def test_cgroup_v1_quota(tmp_path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpus(str(tmp_path)) == pytest.approx(2.0)
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpus(str(tmp_path)) is None


def test_no_cgroup_files_means_no_quota(tmp_path) -> None:
    assert cgroup_cpus(str(tmp_path)) is None
    assert cpu_threads({}, str(tmp_path)) == AFFINITY


def test_quota_caps_the_threads_rounded_up(tmp_path) -> None:
    assert cpu_threads({}, _v2(tmp_path, "50000 100000")) == 1  # half a core: one thread
    if AFFINITY >= 2:
        assert cpu_threads({}, _v2(tmp_path, "110000 100000")) == 2
    assert cpu_threads({}, _v2(tmp_path, f"{100000 * (AFFINITY + 8)} 100000")) == AFFINITY  # affinity is the cap


def test_torchrun_processes_share_the_cpus(tmp_path) -> None:
    root = _v2(tmp_path, "max 100000")
    assert cpu_threads({"LOCAL_WORLD_SIZE": str(AFFINITY)}, root) == 1
    assert cpu_threads({"LOCAL_WORLD_SIZE": str(4 * AFFINITY)}, root) == 1  # never 0


def test_explicit_settings_win_and_bad_ones_are_refused(tmp_path) -> None:
    root = _v2(tmp_path, "50000 100000")
    assert cpu_threads({"OMP_NUM_THREADS": "3"}, root) == 3
    assert cpu_threads({"BDGF_THREADS": "5", "OMP_NUM_THREADS": "3"}, root) == 5
    with pytest.raises(BdgfError, match="BDGF_THREADS='many'.*whole number"):
        cpu_threads({"BDGF_THREADS": "many"}, root)
    with pytest.raises(BdgfError, match="OMP_NUM_THREADS=0"):
        cpu_threads({"OMP_NUM_THREADS": "0"}, root)


def test_resolve_device_sets_torch_threads(monkeypatch) -> None:
    import torch

    from bdgf_core.devices import resolve_device

    before = torch.get_num_threads()
    monkeypatch.setenv("BDGF_THREADS", "1")
    try:
        messages = []

        class Rep:
            def info(self, m):
                messages.append(m)

        assert resolve_device("cpu", Rep()) == "cpu"
        assert torch.get_num_threads() == 1 and "1 threads" in messages[0]
    finally:
        torch.set_num_threads(before)
