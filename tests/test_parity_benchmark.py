"""benchmarks.parity: key mapping, shims, pairing, our side end to end; their side when a checkout is given.

The authors' side needs a checkout of github.com/ncsu-dk-lab/Acc-DD: set ``ACC_DD_DIR`` to its folder
to run :func:`test_authors_side_runs_and_matches_ours_on_the_first_step` (it is never fetched here).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ACC_DD_DIR = os.environ.get("ACC_DD_DIR")
FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def parity():
    from benchmarks import parity as module

    return module


@pytest.fixture(scope="module")
def authors():
    """benchmarks.authors, the adapter to the authors' code."""
    from benchmarks import authors as module

    return module


def test_our_convnet_keys_map_to_the_authors_layout(parity):
    from lightning_dd.nets import NetSpec

    state = NetSpec(depth=2, width=4).build(1, 10, (28, 28)).state_dict()
    # Their models/convnet.py: layers['conv'][d], layers['norm'][d] (GroupNorm), classifier.
    assert parity.authors_key_pairs(state) == {
        "features.0.weight": "layers.conv.0.weight",
        "features.0.bias": "layers.conv.0.bias",
        "features.1.weight": "layers.norm.0.weight",
        "features.1.bias": "layers.norm.0.bias",
        "features.4.weight": "layers.conv.1.weight",
        "features.4.bias": "layers.conv.1.bias",
        "features.5.weight": "layers.norm.1.weight",
        "features.5.bias": "layers.norm.1.bias",
        "classifier.weight": "classifier.weight",
        "classifier.bias": "classifier.bias",
    }
    mapped = parity.to_authors_state(state)
    assert mapped["layers.conv.1.weight"] is state["features.4.weight"]
    assert mapped["layers.conv.1.weight"].shape == (4, 4, 3, 3)
    with pytest.raises(KeyError, match="unexpected"):
        parity.authors_key_pairs({"head.weight": torch.zeros(2, 2)})
    no_norm = NetSpec(depth=2, width=4, norm="none").build(1, 10, (28, 28)).state_dict()
    with pytest.raises(KeyError, match="norm"):
        parity.authors_key_pairs(no_norm)


def test_member_list_turns_the_inclusive_draw_into_a_uniform_one(authors):
    files = authors.MemberList(["a", "b", "c"])
    assert len(files) == 2 and list(files) == ["a", "b", "c"]
    rng = random.Random(0)
    drawn = {files[rng.randint(0, len(files))] for _ in range(300)}  # their call, unchanged
    assert drawn == {"a", "b", "c"}


def test_cpu_default_replaces_only_a_cuda_default(authors):
    def on_cuda(x, device="cuda"):
        return device

    def on_cpu(x, device="cpu"):
        return device

    authors._cpu_default(on_cuda, "device")
    assert on_cuda(1) == "cpu"
    with pytest.raises(RuntimeError, match="no longer has device='cuda'"):
        authors._cpu_default(on_cpu, "device")


def test_a_folder_that_is_not_their_checkout_is_refused(authors, tmp_path):
    with pytest.raises(SystemExit, match="not a checkout"):
        authors.AuthorsCode(tmp_path)


def test_summary_pairs_accuracies_by_seed(parity):
    runs = {
        "idc/theirs/seed0": {"accuracies": [80.0, 82.0], "distill_s": 10.0, "outer_losses": [2.0]},
        "idc/ours/seed0": {"accuracies": [81.0, 83.0], "distill_s": 6.0, "outer_losses": [1.0]},
        "idc/theirs/seed1": {"accuracies": [70.0], "distill_s": 12.0, "outer_losses": []},
        "idc/ours/seed1": {"accuracies": [71.5], "distill_s": 8.0, "outer_losses": [3.0]},
        "idc/ours/seed2": {"accuracies": [90.0], "distill_s": 7.0, "outer_losses": [2.0]},  # no partner: not paired
    }
    (row,) = parity.summarise({"runs": runs}, ["idc"], [0, 1, 2])
    # Per-seed means: theirs 81, 70; ours 82, 71.5, 90. Differences 1.0 and 1.5.
    assert row["paired"] == [1.0, 1.5]
    assert row["diff"][0] == pytest.approx(1.25)
    assert row["diff"][1] == pytest.approx(((0.25**2 + 0.25**2) / 1) ** 0.5)
    assert row["theirs"][0] == pytest.approx(75.5) and row["ours"][0] == pytest.approx((82 + 71.5 + 90) / 3)
    assert row["theirs_n"] == 2 and row["ours_n"] == 3
    assert row["theirs_distill_s"] == pytest.approx(11.0) and row["ours_last_loss"] == pytest.approx(2.0)


def test_the_update_size_is_reported_as_recorded(parity):
    """Runs recorded before whole batches (no ``net_whole_batches`` key) trained on n_data images exactly."""
    s = parity.Settings(n_data=500)
    assert (
        parity.update_images(s, {"net_batch": 64, "net_whole_batches": True})
        == "512 (n_data 500 in whole batches of 64)"
    )  # 8 x 64
    assert parity.update_images(s, {"net_batch": 64, "net_whole_batches": False}) == "500"
    assert parity.update_images(s, {"net_batch": 64}) == "500"


def test_the_initial_images_and_each_sides_gain_over_them(parity):
    acc = lambda *values: {"accuracies": list(values), "distill_s": 1.0, "outer_losses": []}  # noqa: E731
    results = {
        "init_runs": {"0": [70.0, 72.0], "1": [60.0]},
        "runs": {
            "idc/theirs/seed0": acc(72.0),
            "idc/ours/seed0": acc(73.0),
            "idc/theirs/seed1": acc(61.0),
            "idc/ours/seed1": acc(63.0),
        },
    }
    text = parity.init_sentence(results, parity.summarise(results, ["idc"], [0, 1]), [0, 1])
    # init per seed 71 and 60: mean 65.5, std sqrt(((5.5)^2 * 2) / 1) = 7.78; gains theirs (1 + 1) / 2, ours (2 + 3) / 2.
    assert "no distillation): 65.50 ± 7.78 % (per seed 71.00, 60.00)" in text
    assert "theirs / ours: IDC mode +1.00 / +2.50 points" in text
    assert (
        parity.init_sentence({"runs": {}}, parity.summarise({"runs": {}}, ["idc"], [0]), [0]) is None
    )  # results from before the initial images were evaluated


def test_a_results_file_never_mixes_devices(parity, tmp_path):
    """Sets distilled on CUDA and on the CPU are not paired into one table: the device is part of the settings."""
    out = tmp_path / "parity.json"
    out.write_text(json.dumps(parity.load_results(out, parity.Settings(device="cuda"))))
    with pytest.raises(SystemExit, match="device differ"):
        parity.load_results(out, parity.Settings())


def test_cuda_sections_get_their_own_marker(parity, tmp_path):
    """A CUDA run must not overwrite the CPU table (and names the GPU it ran on)."""
    doc = tmp_path / "bench.md"
    session = {
        "wall_s": 1.0,
        "machine": "CPU X, GPU Test-GPU",
        "jobs": 1,
        "threads": 1,
        "cores_used": 1,
        "cores": 96,
        "torch": "9.9.9+cu999",
        "python": "3.99.1",
    }
    results = {
        "runs": {"idc/ours/seed0": {"accuracies": [50.0], "distill_s": 1.0, "outer_losses": [1.0]}},
        "checks": {},
        "sessions": [session],
    }
    opts = parity.build_parser().parse_args(
        ["--device", "cuda", "--modes", "idc", "--seeds", "0", "--output", str(doc)]
    )
    parity.report(results, opts, parity.Settings(device="cuda"), ["--device", "cuda"], "no --authors_dir")
    text = doc.read_text()
    assert "<!-- parity-fashion_mnist-cuda:start -->" in text and "<!-- parity-fashion_mnist:start -->" not in text
    assert "machine: CPU X, GPU Test-GPU, 1 of 96 cores used" in text
    assert "torch 9.9.9+cu999, Python 3.99.1" in text  # the machine the runs ran on, not the one writing the report


TINY = ["--dataset", "digits", "--seeds", "0", "--eval_repeats", "1", "--outer", "1", "--inner", "1", "--width", "4",
        "--eval_epochs", "1", "--pool_size", "1", "--pool_epochs", "0", "--n_data", "16", "--batch_real", "8"]  # fmt: skip


def test_a_stalling_run_leaves_its_stacks_behind(parity, tmp_path, monkeypatch):
    import time

    def stall(payload):
        time.sleep(0.5)
        return {"stalled": True}

    monkeypatch.setattr(parity, "_run_task", stall)
    task = {"mode": "accdd", "seed": 3, "side": "theirs"}
    assert parity.run_task({"task": task, "work": str(tmp_path), "stack_dump_s": 0.1}) == {"stalled": True}
    dumped = (tmp_path / "stacks" / "accdd-theirs-seed3.txt").read_text()
    assert dumped.count("in stall") >= 2  # repeated dumps, each naming the frame the run stood in
    with open(tmp_path / "later.txt", "w"):  # likely reuses the dump file's descriptor
        time.sleep(0.3)
    assert (tmp_path / "later.txt").read_text() == ""  # the dumps stopped with the task
    assert parity.run_task({"task": {**task, "seed": 4}, "work": str(tmp_path), "stack_dump_s": 0}) == {"stalled": True}
    assert not (tmp_path / "stacks" / "accdd-theirs-seed4.txt").exists()


@pytest.mark.slow
def test_our_side_runs_resumes_and_writes_its_section(parity, tmp_path, monkeypatch):
    out, doc = tmp_path / "parity.json", tmp_path / "bench.md"
    results = parity.main([*TINY, "--out", str(out), "--output", str(doc)])
    assert sorted(results["runs"]) == ["accdd/ours/seed0", "idc/ours/seed0"]
    saved = json.loads(out.read_text())
    assert saved["runs"].keys() == results["runs"].keys()
    assert all(len(run["accuracies"]) == 1 and len(run["outer_losses"]) == 1 for run in saved["runs"].values())
    assert saved["protocol"]["net_whole_batches"] is True and saved["protocol"]["mix_downsample"] == "nearest"
    assert len(saved["init_runs"]["0"]) == 1  # the initial images, evaluated as the sets
    text = doc.read_text()
    assert "<!-- parity-digits:start -->" in text and "<!-- parity-digits:end -->" in text
    assert "The authors' side was skipped: no --authors_dir was given" in text
    assert "| IDC mode (fresh networks) | - |" in text  # their column is empty, ours is filled
    assert "The initial images themselves, evaluated the same way (no distillation):" in text

    # A rerun with the same command resumes: nothing is distilled again.
    monkeypatch.setattr(parity, "run_task", lambda payload: pytest.fail(f"re-ran {payload['task']}"))
    again = parity.main([*TINY, "--out", str(out), "--output", str(doc)])
    assert again["runs"] == saved["runs"] and len(again["sessions"]) == 2
    # --report_only writes the table from the file as it is, naming runs that have not finished.
    partial = json.loads(out.read_text())
    del partial["runs"]["accdd/ours/seed0"]
    out.write_text(json.dumps(partial))
    parity.main([*TINY, "--out", str(out), "--output", str(doc), "--report_only"])
    text = doc.read_text()
    assert "Partial: 1 of 2 runs had not finished when this table was written (accdd/ours/seed0)" in text
    assert "--report_only" not in text  # the command shown is the one that completes the runs
    with pytest.raises(SystemExit, match="no finished runs"):
        parity.main([*TINY, "--out", str(tmp_path / "empty.json"), "--output", str(doc), "--report_only"])
    # Other settings never mix into an existing results file.
    with pytest.raises(SystemExit, match="outer differ"):
        parity.main([*TINY, "--outer", "2", "--out", str(out), "--output", str(doc)])  # the last --outer wins


@pytest.mark.slow
def test_our_side_starts_from_the_handed_images_and_uses_the_handed_pool(parity):
    from lightning_dd.distill.pool import EarlyStagePool

    dm = parity.load_data("digits", "unused")
    s = parity.Settings(
        dataset="digits",
        ipc=2,
        factor=1,
        width=4,
        outer=1,
        inner=1,
        lr_img=1e-9,
        n_data=8,
        batch_real=8,
        pool_size=1,
        pool_epochs=0,
    )
    init = parity.initial_images(s, dm.train_data, seed=3)
    stored, losses = parity.run_ours(s, "idc", 0, dm, init, None)
    assert torch.allclose(stored, init.clamp(0, 1), atol=1e-6)  # a negligible step from the handed images
    assert losses[0] > 0
    # A pool of one all-zero network: no gradient reaches the conv weights, so the matching loss is 0;
    # a pool built by the module itself would give a positive loss.
    member = s.net.build(1, 10, (8, 8)).state_dict()
    zero_pool = EarlyStagePool([{k: torch.zeros_like(v) for k, v in member.items()}], "zero", {})
    _, losses = parity.run_ours(s, "accdd", 0, dm, init, zero_pool)
    assert losses == [0.0]


@pytest.mark.slow
@pytest.mark.skipif(
    not ACC_DD_DIR, reason="set ACC_DD_DIR to a checkout of github.com/ncsu-dk-lab/Acc-DD to run the authors' side"
)
@pytest.mark.skipif(
    not FASHION.is_dir(), reason="the authors' side reads Fashion-MNIST from the Debian package dataset-fashion-mnist"
)
def test_authors_side_runs_and_matches_ours_on_the_first_step(tmp_path):
    # A subprocess: their modules have generic top-level names (data, train, test, misc).
    out = tmp_path / "parity.json"
    command = [sys.executable, "-m", "benchmarks.parity", "--authors_dir", ACC_DD_DIR, "--seeds", "0", "--eval_repeats", "1", "--outer", "1",
               "--inner", "1", "--width", "8", "--eval_epochs", "1", "--pool_size", "2", "--pool_epochs", "0", "--n_data", "64",
               "--out", str(out), "--output", str(tmp_path / "bench.md")]  # fmt: skip
    subprocess.run(
        command, check=True, cwd=ROOT, env={**os.environ, "LIGHTNING_DD_QUIET": "1"}, timeout=3600
    )  # minutes on an idle CPU; far longer on a shared one
    results = json.loads(out.read_text())
    assert sorted(results["runs"]) == ["accdd/ours/seed0", "accdd/theirs/seed0", "idc/ours/seed0", "idc/theirs/seed0"]
    for mode in ("idc", "accdd"):
        check = results["checks"][mode]
        assert check["params_theirs"] == check["params_ours"]
        assert (
            check["logits_max_abs_diff"] < 1e-4
            and check["decode_max_abs_diff"] == 0.0
            and check["init_max_abs_diff"] == 0.0
        )
        assert check["loss_rel_diff"] < 1e-5 and check["pixel_grad_rel_diff"] < 1e-4
    assert results["runs"]["idc/theirs/seed0"]["lr_img"] == pytest.approx(results["protocol"]["effective_lr_img"])
    assert len(results["runs"]["accdd/theirs/seed0"]["outer_losses"]) == 1
