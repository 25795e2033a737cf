"""What ``import lightning_dd`` does to a process: Lightning's tips are dropped, matplotlib is not needed.

Both run in a fresh interpreter, since this test process has imported Lightning (and maybe
silenced it) already.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Two tiny Python-API fits with Lightning's defaults (a logger, a checkpoint callback: each comes
# with a tip), the second after the filter is taken off again, to show the tips are still printed
# by this Lightning.
FIT_TWICE = r"""
import logging, sys
import lightning as L
from lightning_dd import DistillModule, NetSpec, RealDataModule
from lightning_dd.utils.lightning_noise import NOISY_LOGGERS

def fit(root):
    module = DistillModule(ipc=1, factor=1, init="real", net=NetSpec(width=4, depth=1), model_source="random", perturb=False,
                           outer_iterations=1, inner_loop=1, batch_real=4, n_data=0, tune_cpu_allocator=False)
    trainer = L.Trainer(default_root_dir=root, accelerator="cpu", log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=RealDataModule("digits"))
    print(f"fit done: outer={module.outer}", flush=True)

fit(sys.argv[1] + "/api")
print("=== filter removed ===", flush=True)
for name in NOISY_LOGGERS:
    logging.getLogger(name).filters.clear()
fit(sys.argv[1] + "/unfiltered")
"""

# matplotlib hidden from imports and from package metadata (torchmetrics looks it up there).
WITHOUT_MATPLOTLIB = r"""
import importlib.abc, importlib.metadata, sys

class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "matplotlib":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Hide())
version = importlib.metadata.version

def hidden_version(name):
    if name.lower() == "matplotlib":
        raise importlib.metadata.PackageNotFoundError(name)
    return version(name)

importlib.metadata.version = hidden_version
import lightning_dd, lightning_dd.cli, lightning_dd.commands
print("imported; matplotlib modules:", sorted(m for m in sys.modules if m.split(".")[0] == "matplotlib"))
"""


def run_python(code: str, *args: str) -> str:
    """stdout and stderr of ``python -c code args`` as one stream, in the order they were written."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LIGHTNING_DD_QUIET": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout
    return proc.stdout


def test_a_python_api_fit_prints_no_lightning_tip(tmp_path):
    out = run_python(FIT_TWICE, str(tmp_path))
    api, unfiltered = out.split("=== filter removed ===")
    assert (
        "fit done: outer=1" in api and "fit done: outer=1" in unfiltered and "GPU available" in api
    )  # Lightning's other messages stay
    assert "💡" not in api and "Tip:" not in api, api
    assert "💡 Tip: For seamless cloud" in unfiltered  # this Lightning does print them


def test_the_library_imports_without_matplotlib():
    assert "imported; matplotlib modules: []" in run_python(WITHOUT_MATPLOTLIB)
