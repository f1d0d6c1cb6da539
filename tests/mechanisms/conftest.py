"""Fixtures of the mechanism tests."""

from __future__ import annotations

import pytest

from dnrt_core.mechanisms import arr as arr_module

#: the three paths of the per-sample memory recurrence (ARR and DPA): the C kernel (float32 on
#: CPU, the default here), and with kernels off the tensor ops, forced by RANK_LOOP_MAX:
#: 0 -> always the log-depth scan, huge -> always the loop over ranks
PATHS = {"kernel": None, "scan": 0, "ranks": 10**9}


@pytest.fixture(params=sorted(PATHS))
def path(request, monkeypatch):
    """Runs a test once per recurrence path; returns the path's name."""
    if request.param == "kernel":
        request.getfixturevalue("cpu_kernel_library")
    else:
        monkeypatch.setenv("DNRT_CPU_KERNELS", "0")
        monkeypatch.setattr(arr_module, "RANK_LOOP_MAX", PATHS[request.param])
    return request.param
