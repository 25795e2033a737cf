"""The CPU allocator setting: large temporaries stop page-faulting, and DistillModule applies it only when asked."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

import lightning_dd.distill.module as module_file

from helpers import fit, tiny_module

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Page faults while a 64 MiB tensor is allocated, touched and freed 10 times.
FAULTS = """
import resource, sys, torch
if sys.argv[1] == "tuned":
    from lightning_dd.utils.allocator import tune_cpu_allocator
    assert tune_cpu_allocator() and tune_cpu_allocator()  # idempotent
torch.ones(16 << 20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.ones(16 << 20)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="the setting is glibc's")
def test_tuned_allocator_reuses_large_blocks_instead_of_faulting_them_in():
    pages_per_tensor = (64 << 20) // 4096
    assert page_faults("default") > 5 * pages_per_tensor  # fresh mmap, every page faulted in, every time
    assert page_faults("tuned") < 2 * pages_per_tensor  # freed blocks are reused (the heap grows once at most)


@pytest.mark.parametrize("enabled", [True, False])
def test_distill_module_applies_it_only_when_enabled(pool_dir, monkeypatch, enabled):
    calls = []
    monkeypatch.setattr(module_file, "tune_cpu_allocator", lambda: calls.append(1) or True)
    fit(tiny_module(pool_dir, tune_cpu_allocator=enabled, model_source="random", outer_iterations=1, inner_loop=1))
    assert len(calls) == (1 if enabled else 0)
