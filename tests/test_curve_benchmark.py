"""benchmarks.curve: snapshot schedule and clock, resume, speed-up arithmetic, result files; the image-folder configs."""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
from benchmarks import curve, curve_plot
from benchmarks.curve_plot import draw_curves, figure_from_csv, plot_csv, plot_curves

from lightning_dd.utils.errors import ConfigError  # noqa: E402

TINY_CONFIG = """\
data:
  dataset: digits
model:
  ipc: 1
  factor: 1
  init: real
  net: {depth: 1, width: 8}
  pool: {size: 1, epochs: 1, batch_size: 256}
  inner_loop: 2
  batch_real: 8
  n_data: 16
evaluation:
  epochs: 1
  repeats: 1
"""
TINY_IMAGENET = Path("/work/shared/data/tiny-imagenet-10")
if not TINY_IMAGENET.is_dir():
    TINY_IMAGENET = ROOT.parent / "shared" / "data" / "tiny-imagenet-10"


def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_CONFIG)
    return path


# ------------------------------------------------------------------------------ schedule and clock
def test_checkpoint_schedule_doubles_and_ends_at_the_budget():
    assert curve.checkpoint_schedule(30, 180, 1) == [30.0, 60.0, 120.0, 180.0]
    # two per doubling: 10, 10*sqrt(2), 20, 20*sqrt(2), then the budget
    assert curve.checkpoint_schedule(10, 40, 2) == pytest.approx([10.0, 14.142136, 20.0, 28.284271, 40.0])
    assert curve.checkpoint_schedule(30, 30, 1) == [30.0]
    assert curve.checkpoint_schedule(30, 20, 1) == [20.0]
    with pytest.raises(ConfigError, match="per_doubling"):
        curve.checkpoint_schedule(30, 180, 0)


class FakeTime:
    """A controllable clock for perf_counter and process_time (CPU runs at half the wall rate)."""

    def __init__(self) -> None:
        self.now = 0.0

    def wall(self) -> float:
        return self.now

    def cpu(self) -> float:
        return self.now / 2


class FakeModule:
    """Steps as DistillModule does, timing its matching part through the trainer's profiler (the clock's)."""

    def __init__(self, profiler) -> None:
        self.hparams = argparse.Namespace(inner_loop=2)
        self.outer, self.inner, self.finished_outer = 0, 0, False
        self.images = torch.zeros(2, 1, 4, 4)
        self.profiler = profiler

    def distilled(self):
        return self.images.clone(), torch.arange(2)

    def decoded(self):
        return self.images.clone(), torch.arange(2)

    def step(self, fake: FakeTime, seconds: float) -> None:
        """One matching step lasting ``seconds``."""
        self._matching_step(fake, seconds)
        self.inner += 1
        if self.inner == self.hparams.inner_loop:
            self.outer, self.inner = self.outer + 1, 0
        self.images += 1

    def _matching_step(self, fake: FakeTime, seconds: float) -> None:
        with self.profiler.profile("matching"):
            fake.now += seconds


class FakeTrainer:
    def __init__(self, fake: FakeTime, save_seconds: float) -> None:
        self.fake, self.save_seconds, self.should_stop, self.saved = fake, save_seconds, False, 0

    def save_checkpoint(self, path, weights_only=None) -> None:
        self.fake.now += self.save_seconds  # writing takes time that must stay off the clock
        Path(path).write_bytes(b"ckpt")
        self.saved += 1


def test_clock_counts_setup_shares_snapshots_passed_together_and_excludes_writes(tmp_path, monkeypatch):
    fake = FakeTime()
    monkeypatch.setattr(curve.time, "perf_counter", fake.wall)
    monkeypatch.setattr(curve.time, "process_time", fake.cpu)
    clock = curve.StudyClock(tmp_path, [10.0, 20.0, 40.0], ckpt_seconds=1e9)
    trainer, module = FakeTrainer(fake, save_seconds=100.0), FakeModule(clock.parts)
    clock.setup(trainer, module, "fit")
    fake.now = 25.0  # pool pretraining inside setup: 25 s
    clock.on_train_start(trainer, module)
    module.step(fake, 3.0)  # clock 28 s: checkpoints 10 and 20 have both passed
    clock.on_train_batch_end(trainer, module, None, None, 0)
    module.step(fake, 11.0)  # 39 s: nothing due (the 100 s checkpoint write is off the clock)
    clock.on_train_batch_end(trainer, module, None, None, 1)
    assert not trainer.should_stop
    module.step(fake, 2.0)  # 41 s: the last checkpoint, then stop
    clock.on_train_batch_end(trainer, module, None, None, 2)
    assert trainer.should_stop and trainer.saved == 1  # the final snapshot needs no checkpoint
    snaps = json.loads((tmp_path / "progress.json").read_text())["snapshots"]
    assert sorted(snaps, key=int) == ["0", "2", "3"]  # checkpoint 1 (10 s) shares snapshot 2
    assert [snaps[k]["wall_s"] for k in ("0", "2", "3")] == pytest.approx([25.0, 28.0, 41.0])
    assert [snaps[k]["cpu_s"] for k in ("0", "2", "3")] == pytest.approx([12.5, 14.0, 20.5])
    assert [snaps[k]["nominal_s"] for k in ("0", "2", "3")] == [0.0, 20.0, 40.0]
    assert [snaps[k]["steps"] for k in ("0", "2", "3")] == [0, 1, 3]
    assert snaps["3"]["setup_wall_s"] == pytest.approx(25.0) and snaps["3"]["matching_s"] == pytest.approx(16.0)
    assert torch.load(tmp_path / snaps["2"]["file"], weights_only=True)["decoded"].max() == 1  # the set after one step
    assert snaps["0"]["digest"] != snaps["2"]["digest"]


def test_cpu_clock_places_checkpoints_and_the_budget_in_cpu_seconds(tmp_path, monkeypatch):
    """--clock cpu: the same steps as the wall-clock test above, but FakeTime's CPU runs at half the wall rate."""
    fake = FakeTime()
    monkeypatch.setattr(curve.time, "perf_counter", fake.wall)
    monkeypatch.setattr(curve.time, "process_time", fake.cpu)
    clock = curve.StudyClock(tmp_path, [10.0, 20.0], ckpt_seconds=1e9, clock="cpu")
    trainer, module = FakeTrainer(fake, save_seconds=100.0), FakeModule(clock.parts)
    clock.setup(trainer, module, "fit")
    fake.now = 25.0  # setup: 25 s wall, 12.5 s CPU
    clock.on_train_start(trainer, module)
    module.step(
        fake, 3.0
    )  # CPU 14 s: only the 10 s checkpoint has passed (the wall clock, at 28 s, would have passed both)
    clock.on_train_batch_end(trainer, module, None, None, 0)
    module.step(fake, 11.0)  # CPU 19.5 s
    clock.on_train_batch_end(trainer, module, None, None, 1)
    assert not trainer.should_stop
    module.step(fake, 2.0)  # CPU 20.5 s: the budget
    clock.on_train_batch_end(trainer, module, None, None, 2)
    snaps = json.loads((tmp_path / "progress.json").read_text())["snapshots"]
    assert trainer.should_stop and sorted(snaps, key=int) == ["0", "1", "2"]
    assert [snaps[k]["cpu_s"] for k in ("0", "1", "2")] == pytest.approx([12.5, 14.0, 20.5])


def test_cpu_clock_study_reports_and_draws_cpu_seconds(tmp_path):
    pytest.importorskip("matplotlib")
    args = study_args(tiny_config(tmp_path), tmp_path, "--repeats", "1", "--full_epochs", "0", "--clock", "cpu")
    study = curve.open_study(args)
    assert study["clock"] == "cpu" and curve.read_json(Path(study["dir"]) / "study.json")["signature"]["clock"] == "cpu"
    with pytest.raises(ConfigError, match="clock"):  # the same folder, counted on the other clock
        curve.open_study(study_args(tiny_config(tmp_path), tmp_path))
    cfg = curve.load_config(args.config, None, torch.get_num_threads(), [])
    for mode in ("idc", "accdd"):
        fabricate(Path(study["dir"]), mode, 0, [(0, 0.0, 40.0), (1, 100.0, 240.0)])  # CPU seconds: half the wall's
    settings, keys, tasks = curve.evaluation_plan(study, cfg, args, 1)
    for task in tasks:
        accuracy = 60.0 if task[1] == "random" else 70.0 if task[2].endswith("-1") else 50.0
        curve.write_json(Path(task[-1]), {"accuracy": accuracy, "wall_s": 1.0, "cpu_s": 1.0})
    curve.write_outputs(study, cfg, settings, keys, 1, 3, ["--config", "x"], tmp_path / "curves", None)
    md = (tmp_path / "curves" / "digits-ipc1.md").read_text()
    assert (
        md.startswith("## Accuracy vs CPU time:")
        and "| 100 s | 70.00 +- 0.00 (10, 120 s) |" in md
        and "of CPU time (" in md
    )
    assert "| setup incl. pool (wall s) | matching (wall s) |" in md  # the time breakdown stays wall-clock, and says so
    # Both modes go from 50 % (CPU 20 s, 0 steps) to 70 % (CPU 120 s, 10 steps): random real's 60 % at 70 s and 5 steps; +20 points in 10 steps.
    assert (
        "Random real images (60.00 %) reached by the mean curve: Acc-DD at 70 s (5 steps); IDC mode at 70 s (5 steps)."
        in md
    )
    assert "| 100 s | +2000.00 (0-10) | +2000.00 (0-10) |" in md
    figure = figure_from_csv(tmp_path / "curves" / "digits-ipc1.csv")
    assert figure["series"][0]["points"][-1][0] == pytest.approx(120.0) and figure["xlabel"].startswith("CPU seconds")


# --------------------------------------------------------------------------------- speed-up arithmetic
def test_speedups_on_hand_made_curves():
    idc = [(0.0, 50.0), (100.0, 60.0), (200.0, 70.0), (400.0, 80.0)]
    accdd = [(50.0, 50.0), (100.0, 65.0), (200.0, 80.0)]
    rows = curve.speedups(idc, accdd)
    # 60 %: IDC at 100 s; Acc-DD between (50, 50) and (100, 65): 50 + 50 * 10/15 = 83.33 s -> 1.2x
    # 70 %: IDC at 200 s; Acc-DD 100 + 100 * 5/15 = 133.33 s -> 1.5x ; 80 %: 400 s vs 200 s -> 2x
    assert [r["level"] for r in rows] == [60.0, 70.0, 80.0]
    assert [r["reference_s"] for r in rows] == pytest.approx([100.0, 200.0, 400.0])
    assert [r["candidate_s"] for r in rows] == pytest.approx([250 / 3, 400 / 3, 200.0])
    assert [r["speedup"] for r in rows] == pytest.approx([1.2, 1.5, 2.0])
    slow = curve.speedups(idc, [(50.0, 50.0), (400.0, 75.0)])
    assert slow[-1]["candidate_s"] is None and slow[-1]["speedup"] is None
    # 60 %: 50 + 350 * 10/25 = 190 s -> 100/190
    assert slow[0]["speedup"] == pytest.approx(100 / 190)


def test_speedup_sentence_on_hand_made_curves():
    idc = [(0.0, 50.0), (100.0, 60.0), (200.0, 70.0)]
    # 70 %: IDC mode between its snapshots at 100 and 200 s (interpolated 200 s), Acc-DD between 50 and 100 s (interpolated 100 s):
    # the ratio lies between 100 / 100 and 200 / 50, and the interpolation gives 200 / 100
    assert curve.speedup_sentence([(50.0, 50.0), (100.0, 70.0)], idc).startswith(
        "**Measured speed-up: between 1.00x and 4.00x** (straight-line interpolation between snapshots: 2.00x)."
    )
    # Acc-DD's snapshot before the level is its start at 0 s: no upper bound
    assert curve.speedup_sentence([(0.0, 50.0), (100.0, 70.0)], idc).startswith(
        "**Measured speed-up: between 1.00x and unbounded (Acc-DD's snapshot before it is at 0 s)** (straight-line interpolation between snapshots: 2.00x)."
    )
    assert curve.speedup_sentence([(50.0, 50.0), (100.0, 65.0)], idc).startswith("**Measured speed-up: none.**")
    assert curve.speedup_sentence([(0.0, 75.0), (100.0, 80.0)], idc).startswith("**Measured speed-up: not defined.**")
    # IDC mode's best is its starting set: no time to compare against (not 0.00x)
    assert curve.speedup_sentence([(130.0, 77.0)], [(0.05, 77.4), (240.0, 77.0)]).startswith(
        "**Measured speed-up: not defined yet.** IDC mode has not improved"
    )


def test_crossings_on_hand_made_curves():
    a = [(0.0, 50.0), (100.0, 70.0), (200.0, 72.0)]
    b = [(0.0, 60.0), (100.0, 65.0), (200.0, 80.0)]
    found = curve.crossings(a, b)
    # a - b: -10 at 0, +5 at 100, -8 at 200 -> crossings at 100*10/15 = 66.67 s and 100 + 100*5/13 = 138.46 s
    assert [c["time"] for c in found] == pytest.approx([200 / 3, 100 + 500 / 13])
    assert [c["ahead_after"] for c in found] == ["a", "b"]
    assert found[0]["accuracy"] == pytest.approx(50 + 20 * 2 / 3)
    # different grids, a tie at 50 s (b there: 55 + 10 * 0.5 = 60) between a behind and a ahead
    tie = curve.crossings([(0.0, 50.0), (50.0, 60.0), (100.0, 70.0)], [(0.0, 55.0), (100.0, 65.0)])
    assert [(c["time"], c["ahead_after"]) for c in tie] == [(50.0, "a")]
    assert curve.crossings([(0.0, 50.0), (10.0, 60.0)], [(0.0, 40.0), (10.0, 45.0)]) == []
    assert curve.crossings([(0.0, 50.0), (10.0, 60.0)], [(20.0, 40.0), (30.0, 45.0)]) == []


def test_gains_per_1000_steps_skip_snapshots_a_handful_of_steps_apart():
    point = lambda index, steps, mean: {"index": index, "steps": steps, "mean": mean}  # noqa: E731
    # Acc-DD's shape: a snapshot 1 step after the start (checkpoints passed during the pool), then 76, 251
    pts = [point(0, 0, 77.0), point(1, 1, 77.5), point(2, 76, 80.0), point(3, 85, 80.5), point(4, 251, 81.0)]
    # 0 -> 76: 3 points in 76 steps = 39.47 per 1 000; 76 -> 85 is 9 steps (skipped); 76 -> 251: 1 point in 175 steps = 5.71
    assert curve.gains_per_1000_steps(pts) == {2: "+39.47 (0-76)", 4: "+5.71 (76-251)"}
    assert curve.gains_per_1000_steps([point(0, 0, 50.0), point(1, 10, 52.0)]) == {1: "+200.00 (0-10)"}
    assert curve.gains_per_1000_steps([point(0, 0, 50.0)]) == {} and curve.gains_per_1000_steps([]) == {}


def test_crossing_sentence_names_the_leader_or_level_curves():
    a = [(0.0, 50.0), (100.0, 70.0), (200.0, 72.0)]
    b = [(0.0, 60.0), (100.0, 65.0), (200.0, 80.0)]
    assert (
        curve.crossing_sentence(a, b)
        == "The mean curves cross at 67 s (63.33 %), Acc-DD ahead after; at 138 s (70.77 %), IDC mode ahead after."
    )
    ahead = [(0.0, 61.0), (100.0, 71.0), (200.0, 82.0)]
    assert (
        curve.crossing_sentence(ahead, b)
        == "The mean curves do not cross between 0 s and 200 s: Acc-DD is ahead throughout."
    )
    # level at the end (75 % both), Acc-DD ahead before: not "IDC mode ahead" (the end decides nothing), not "throughout"
    assert curve.crossing_sentence([(0.0, 60.0), (200.0, 75.0)], [(0.0, 50.0), (200.0, 75.0)]).endswith(
        ": Acc-DD is ahead wherever they differ."
    )
    assert curve.crossing_sentence([(0.0, 50.0), (200.0, 75.0)], [(0.0, 60.0), (200.0, 75.0)]).endswith(
        ": IDC mode is ahead wherever they differ."
    )
    assert curve.crossing_sentence([(0.0, 50.0), (200.0, 75.0)], [(0.0, 50.0), (100.0, 62.5), (200.0, 75.0)]).endswith(
        ": they are level throughout."
    )
    assert (
        curve.crossing_sentence([(0.0, 50.0), (10.0, 60.0)], [(20.0, 40.0), (30.0, 45.0)])
        == "The curves share no time range, so they cannot cross."
    )


# ------------------------------------------------------------------------- resume and result files
def study_args(config: Path, tmp_path: Path, *extra: str) -> argparse.Namespace:
    return curve.parse_args(
        [
            "--config",
            str(config),
            "--study_dir",
            str(tmp_path / "study"),
            "--results_dir",
            str(tmp_path / "curves"),
            "--output",
            str(tmp_path / "bench.md"),
            "--budget_minutes",
            "0.05",
            "--first_checkpoint",
            "1",
            *extra,
        ]
    )


def test_distil_phase_skips_finished_runs_and_reruns_the_rest(tmp_path, monkeypatch):
    args = study_args(tiny_config(tmp_path), tmp_path, "--modes", "accdd", "idc", "--seeds", "0", "1")
    study = curve.open_study(args)
    curve.write_json(Path(study["dir"]) / "runs" / "accdd" / "seed0" / "progress.json", {"snapshots": {}, "done": True})
    curve.write_json(Path(study["dir"]) / "runs" / "idc" / "seed0" / "progress.json", {"snapshots": {}})  # interrupted
    calls = []
    monkeypatch.setattr(
        curve,
        "distil_run",
        lambda task: calls.append(task[1:3]) or {"mode": task[1], "seed": task[2], "status": "done"},
    )
    curve.distil_phase(study, args)
    assert calls == [("idc", 0), ("accdd", 1), ("idc", 1)]
    other = study_args(tiny_config(tmp_path), tmp_path, "--budget_minutes", "0.1")
    with pytest.raises(ConfigError, match="budget_s"):
        curve.open_study(other)


def fabricate(study_dir: Path, mode: str, seed: int, points: list[tuple[int, float, float]]) -> None:
    """A finished run: snapshots (index, nominal, wall) with distinct contents."""
    run = study_dir / "runs" / mode / f"seed{seed}"
    snapshots = {}
    for index, nominal, wall in points:
        images = torch.full((10, 1, 8, 8), (index + 3 * seed + 10 * (mode == "accdd")) / 20)
        name = f"snapshot-{index:02d}.pt"
        curve.atomic_torch_save(
            {"decoded": images, "labels": torch.arange(10), "stored": images, "stored_labels": torch.arange(10)},
            run / name,
        )
        snapshots[str(index)] = {
            "index": index, "nominal_s": nominal, "wall_s": wall, "cpu_s": wall / 2, "setup_wall_s": 10.0 if mode == "accdd" else 0.0,
            "setup_cpu_s": 5.0, "matching_s": wall / 2, "network_s": wall / 4, "steps": index * 10, "outer": index, "file": name,
            "digest": f"{mode}-{seed}-{index}",
        }  # fmt: skip
    curve.write_json(run / "progress.json", {"snapshots": snapshots, "done": True})


def test_results_csv_markdown_png_and_section_from_a_hand_made_study(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    drawn = []
    real_plot = curve_plot.plot_curves
    monkeypatch.setattr(
        curve_plot, "plot_curves", lambda path, **kwargs: drawn.append(kwargs) or real_plot(path, **kwargs)
    )
    args = study_args(tiny_config(tmp_path), tmp_path, "--repeats", "1", "--full_epochs", "0")
    study = curve.open_study(args)
    study_dir = Path(study["dir"])
    cfg = curve.load_config(args.config, None, torch.get_num_threads(), [])
    # Two seeds per mode; accuracy of each snapshot below (one evaluation network each).
    accs = {
        ("idc", 0): [50.0, 60.0, 70.0], ("idc", 1): [50.0, 62.0, 72.0],
        ("accdd", 0): [55.0, 66.0, 74.0], ("accdd", 1): [55.0, 64.0, 72.0],
    }  # fmt: skip
    walls = {"idc": [0.0, 100.0, 200.0], "accdd": [50.0, 100.0, 200.0]}
    for (mode, seed), values in accs.items():
        fabricate(
            study_dir, mode, seed, [(0, 0.0, walls[mode][0]), (1, 100.0, walls[mode][1]), (2, 200.0, walls[mode][2])]
        )
    settings, keys, tasks = curve.evaluation_plan(study, cfg, args, 1)
    assert sorted(t[2] for t in tasks) == sorted(
        [f"{m}-{s}-{i}" for m, s in accs for i in range(3)] + ["random-real-ipc1"]
    )
    for (mode, seed), values in accs.items():
        for index, acc in enumerate(values):
            curve.write_json(
                study_dir / "evals" / keys["curve"] / f"{mode}-{seed}-{index}" / "0.json",
                {"accuracy": acc, "wall_s": 3.0, "cpu_s": 3.0},
            )
    curve.write_json(
        study_dir / "evals" / keys["curve"] / "random-real-ipc1" / "0.json",
        {"accuracy": 40.0, "wall_s": 1.0, "cpu_s": 1.0},
    )
    _, _, left = curve.evaluation_plan(study, cfg, args, 1)
    assert left == []  # everything evaluated: a rerun trains no network

    summary = curve.write_outputs(
        study, cfg, settings, keys, 1, 3, ["--config", "x"], tmp_path / "curves", tmp_path / "bench.md"
    )
    # Means over seeds: IDC 50, 61, 71 at 0/100/200 s; Acc-DD 55, 65, 73 at 50/100/200 s.
    assert [p["mean"] for p in summary["modes"]["idc"]["points"]] == pytest.approx([50.0, 61.0, 71.0])
    assert summary["modes"]["idc"]["points"][1]["std"] == pytest.approx(2**0.5)  # stdev(60, 62)
    rows = list(csv.DictReader((tmp_path / "curves" / "digits-ipc1.csv").open()))
    assert len(rows) == 12 + 1 and rows[-1]["mode"] == "random real" and rows[-1]["acc_mean"] == "40.00"
    assert {(r["mode"], r["seed"], r["checkpoint"], r["acc_mean"]) for r in rows[:12]} >= {
        ("accdd", "1", "1", "64.00"),
        ("idc", "0", "2", "70.00"),
    }
    md = (tmp_path / "curves" / "digits-ipc1.md").read_text()
    # IDC's best 71 %; Acc-DD reaches it between (100, 65) and (200, 73): 100 + 100 * 6/8 = 175 s -> 200/175 = 1.14x
    # the snapshots bracket the ratio: IDC mode between 100 and 200 s, Acc-DD between 100 and 200 s -> 0.50x to 2.00x
    assert (
        "**Measured speed-up: between 0.50x and 2.00x** (straight-line interpolation between snapshots: 1.14x)." in md
    )
    # 61 %: IDC at 100 s, Acc-DD at 50 + 50 * 6/10 = 80 s -> 1.25x
    # Pool cached: Acc-DD's setup (10 s) less IDC mode's (0 s) off its clock: 61 % at 40 + 50 * 6/10 = 70 s -> 1.43x; 71 % at 90 + 100 * 6/8 = 165 s -> 1.21x
    assert (
        "| 61.00 | 100 s | 80 s | 1.25x | 70 s | 1.43x |" in md
        and "| 71.00 | 200 s | 175 s | 1.14x | 165 s | 1.21x |" in md
    )
    assert "Pool cached: Acc-DD's times less its pool pretraining (10 s: its setup minus IDC mode's)" in md
    # Acc-DD - IDC: 55 - 55.5 at 50 s, 65 - 61 at 100 s -> crossing at 50 + 50 * 0.5/4.5 = 55.6 s
    assert "The mean curves cross at 56 s" in md and "Acc-DD ahead after" in md
    assert "| 100 s | 65.00 +- 1.41 (10, 100 s) | 61.00 +- 1.41 (10, 100 s) |" in md
    assert "](digits-ipc1.png)" in md
    section = (tmp_path / "bench.md").read_text()
    assert (
        "<!-- curve-digits-ipc1:start -->" in section
        and "](curves/digits-ipc1.png)" in section
        and "Command: `python -m benchmarks.curve --config x`" in section
    )
    with Image.open(tmp_path / "curves" / "digits-ipc1.png") as image:
        assert image.format == "PNG" and image.size == (1100, 640)
        colours = {c for _, c in image.convert("RGB").getcolors(2**20)}
    assert curve.COLORS["accdd"] in colours and curve.COLORS["idc"] in colours
    # The study's figure is drawn from its CSV (two decimals): IDC's start snapshot at 0 s is left
    # off the log axis, Acc-DD's at 50 s is kept.
    (figure,) = drawn
    assert figure == figure_from_csv(tmp_path / "curves" / "digits-ipc1.csv")
    assert [(s["label"], s["color"]) for s in figure["series"]] == [
        ("Acc-DD (2 seeds)", curve.COLORS["accdd"]),
        ("IDC mode (2 seeds)", curve.COLORS["idc"]),
    ]
    assert [v for p in figure["series"][0]["points"] for v in p] == pytest.approx(
        [50.0, 55.0, 0.0, 100.0, 65.0, 2**0.5, 200.0, 73.0, 2**0.5], abs=0.01
    )
    assert figure["lines"] == [
        {"label": "random real (ours, 1 nets)", "value": 40.0, "color": (90, 90, 90), "dashed": False}
    ]
    assert [v for p in figure["series"][1]["points"] for v in p] == pytest.approx(
        [100.0, 61.0, 2**0.5, 200.0, 71.0, 2**0.5], abs=0.01
    )
    assert plot_csv(tmp_path / "curves" / "digits-ipc1.csv", tmp_path / "again.png") == tmp_path / "again.png"
    with Image.open(tmp_path / "again.png") as image:
        assert image.size == (1100, 640)


def test_paper_protocol_trains_the_final_set_chosen_on_validation_on_its_own_device(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")  # the result files include the figure
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG.replace("  dataset: digits\n", "  dataset: digits\n  val_per_class: 20\n"))
    args = study_args(
        config,
        tmp_path,
        "--repeats",
        "1",
        "--full_epochs",
        "0",
        "--paper_epochs",
        "7",
        "--paper_repeats",
        "2",
        "--paper_device",
        "cuda",
        "--paper_width",
        "32",
    )
    study = curve.open_study(args)
    study_dir = Path(study["dir"])
    cfg = curve.load_config(args.config, None, torch.get_num_threads(), [])
    # (test, validation) of each final set: accdd seed 0 is best on test but worst on validation; accdd seed 1 is best on validation
    finals = {("idc", 0): (70.0, 71.0), ("accdd", 0): (74.0, 69.0), ("accdd", 1): (73.0, 72.0)}
    for (mode, seed), (final, val) in finals.items():
        fabricate(study_dir, mode, seed, [(0, 0.0, 0.0), (1, 100.0, 100.0)])
        for index, (acc, v) in enumerate(
            ((90.0, 95.0), (final, val))
        ):  # a better early snapshot must not be chosen: only final sets count
            curve.write_json(
                study_dir / "evals" / curve.digest(curve.eval_settings(cfg)) / f"{mode}-{seed}-{index}" / "0.json",
                {"accuracy": acc, "val_accuracy": v, "wall_s": 1.0, "cpu_s": 1.0},
            )
    curve.write_json(
        study_dir / "evals" / curve.digest(curve.eval_settings(cfg)) / "random-real-ipc1" / "0.json",
        {"accuracy": 40.0, "wall_s": 1.0, "cpu_s": 1.0},
    )
    settings, keys, tasks = curve.evaluation_plan(study, cfg, args, 1)
    assert [(t[1], t[2], t[4]) for t in tasks] == [("snapshot", "accdd-1-1", 0), ("snapshot", "accdd-1-1", 1)]
    paper = tasks[0][5]
    assert (
        paper["device"] == "cuda"
        and paper["net"]["width"] == 32
        and paper["net"]["depth"] == 3
        and paper["schedule"]["epochs"] == 7
    )
    assert keys["paper"] != keys["curve"] and settings["paper"]["chosen"] == {
        "mode": "accdd",
        "seed": 1,
        "digest": "accdd-1-1",
    }
    seen = []

    def fake_splits(images, labels, test, val, net, schedule, seed, device, progress=None, soft=None):
        seen.append((net.width, schedule.epochs, seed, device, val is not None))
        return {"test": 81.0 + seed, "val": 80.0}

    monkeypatch.setattr("lightning_dd.evaluation.evaluate_splits", fake_splits)
    for task in tasks:
        curve.evaluate_task(task)
    assert seen == [
        (32, 7, 0, "cuda", True),
        (32, 7, 1, "cuda", True),
    ]  # the study distilled on the CPU; its paper networks train on the GPU
    written = json.loads((study_dir / "evals" / keys["paper"] / "accdd-1-1" / "1.json").read_text())
    assert written["device"] == "cuda" and written["val_accuracy"] == 80.0
    curve.write_outputs(study, cfg, settings, keys, 1, 2, ["--config", "x"], tmp_path / "curves", None)
    md = (tmp_path / "curves" / "digits-ipc1.md").read_text()
    assert (
        "**Measured speed-up: not defined yet.**" in md
    )  # IDC mode's best (90 %) is its start snapshot: no time to compare against
    assert (
        "Evaluation off the paper's width and epochs: the best final set (Acc-DD, seed 1, chosen on validation accuracy) trained on ConvNet-3 width 32 for 7 epochs (on the GPU): 81.50 +- 0.71 % (2 nets)"
        in md
    )
    rows = list(csv.DictReader((tmp_path / "curves" / "digits-ipc1.csv").open()))
    assert rows[-1]["mode"] == "paper protocol: accdd" and rows[-1]["acc_mean"] == "81.50"


def test_without_a_validation_split_no_final_set_is_chosen_for_the_paper_protocol(tmp_path, capsys):
    args = study_args(tiny_config(tmp_path), tmp_path, "--repeats", "1", "--full_epochs", "0", "--paper_epochs", "7")
    study = curve.open_study(args)
    study_dir, cfg = Path(study["dir"]), curve.load_config(args.config, None, torch.get_num_threads(), [])
    fabricate(study_dir, "accdd", 0, [(0, 0.0, 0.0), (1, 100.0, 100.0)])
    for index in range(2):
        curve.write_json(
            study_dir / "evals" / curve.digest(curve.eval_settings(cfg)) / f"accdd-0-{index}" / "0.json",
            {"accuracy": 70.0, "wall_s": 1.0, "cpu_s": 1.0},
        )
    settings, _, tasks = curve.evaluation_plan(study, cfg, args, 1)
    assert settings["paper"] is None and all(t[1] != "snapshot" or t[5] == settings["curve"] for t in tasks)
    assert "no final set is chosen; nothing is chosen on test" in capsys.readouterr().out


def test_benchmarks_name_lightnings_accelerator_for_a_torch_device():
    from benchmarks.runner import accelerator

    assert [accelerator(d) for d in ("cuda", "cuda:1", torch.device("cuda", 0), "cpu", torch.device("cpu"))] == [
        "gpu",
        "gpu",
        "gpu",
        "cpu",
        "cpu",
    ]


def test_plot_draws_every_series_and_dashed_line(tmp_path):
    pytest.importorskip("matplotlib")
    red, blue, green, grey = (214, 39, 40), (31, 119, 180), (44, 160, 44), (90, 90, 90)
    series = [{"label": "a", "color": red, "points": [(30, 60, 2), (60, 70, 1), (120, 75, 1)]}]
    lines = [
        {"label": "published", "value": 80.0, "color": green, "dashed": True},
        {"label": "ours", "value": 50.0, "color": grey, "dashed": False},
    ]
    plot_curves(tmp_path / "p.png", series, lines, "t", "x", "y", size=(600, 400))
    with Image.open(tmp_path / "p.png") as image:
        assert image.format == "PNG" and image.size == (600, 400)
        pixels = image.convert("RGB")
    counts = {c: n for n, c in pixels.getcolors(2**20)}
    assert counts.get(red, 0) > 50 and blue not in counts

    # The dashed line: along its row, runs of its colour alternate with gaps inside the axes.
    def near(pixel, colour, tolerance=40):
        return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour))

    row = max(range(400), key=lambda y: sum(near(pixels.getpixel((x, y)), green) for x in range(600)))
    marks = "".join("g" if near(pixels.getpixel((x, row)), green) else "." for x in range(120, 260))
    assert marks.count("g") > 60 and marks.count(".") > 20 and ".g" in marks and "g." in marks

    # What the figure holds: a log-x axis at round times, the band at mean +- std, the mean line,
    # the published value dashed and our reference solid, every entry in the legend.
    axes = draw_curves(series, lines, "t", "x", "y", size=(600, 400)).axes[0]
    assert axes.get_xscale() == "log" and list(axes.get_xticks()) == [30, 60, 120]
    assert [t.get_text() for t in axes.get_xticklabels()] == ["30 s", "1 min", "2 min"]
    # A long study (2 min to 4 h): round times an eighth of the log span apart, not 15 and 20 min side by side
    long = draw_curves(
        [{**series[0], "points": [(137, 77, 1), (960, 80, 1), (14400, 83, 1)]}], [], "t", "x", "y", size=(600, 400)
    ).axes[0]
    assert list(long.get_xticks()) == [120, 300, 600, 1200, 3600, 7200, 14400]  # span 105..18720 s: ratio >= 1.91
    (band,) = axes.collections
    outline = {(round(float(x)), round(float(y), 6)) for x, y in band.get_paths()[0].vertices}
    assert {(30, 58), (30, 62), (60, 69), (60, 71), (120, 74), (120, 76)} <= outline
    assert band.get_facecolor()[0][:3] == pytest.approx([c / 255 for c in red]) and band.get_alpha() == pytest.approx(
        0.22
    )
    mean, published, ours = axes.get_lines()
    assert list(mean.get_xdata()) == [30, 60, 120] and list(mean.get_ydata()) == [60, 70, 75]
    assert (published.get_linestyle(), list(published.get_ydata())) == ("--", [80.0, 80.0])
    assert (ours.get_linestyle(), list(ours.get_ydata())) == ("-", [50.0, 50.0])
    assert [t.get_text() for t in axes.get_legend().get_texts()] == ["a", "published", "ours"]


def test_figure_from_a_hand_written_csv(tmp_path):
    """Points need every seed's evaluation; one seed's band is its spread over networks; a start at ~0 s is left out."""
    rows = [
        # mode, seed, checkpoint, nominal_s, wall_s, acc_mean, acc_std, nets
        ("idc", 0, 0, 0.0, 0.0, "20.00", "0.00", 1), ("idc", 0, 1, 30.0, 31.0, "50.00", "0.00", 1), ("idc", 0, 2, 60.0, 61.0, "60.00", "0.00", 1),
        ("idc", 1, 0, 0.0, 0.0, "22.00", "0.00", 1), ("idc", 1, 1, 30.0, 33.0, "54.00", "0.00", 1), ("idc", 1, 2, 60.0, 63.0, "", "", 0),
        ("accdd", 0, 0, 0.0, 20.0, "30.00", "1.50", 2), ("accdd", 0, 1, 30.0, 40.0, "65.00", "2.50", 2),
    ]  # fmt: skip
    with (tmp_path / "s.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=curve.CSV_FIELDS)
        writer.writeheader()
        for mode, seed, index, nominal, wall, mean, std, nets in rows:
            writer.writerow(
                {
                    "study": "s",
                    "dataset": "mnist",
                    "ipc": 1,
                    "mode": mode,
                    "seed": seed,
                    "checkpoint": index,
                    "nominal_s": nominal,
                    "wall_s": wall,
                    "eval_net": "ConvNet-3 width 8",
                    "eval_epochs": 5,
                    "nets": nets,
                    "acc_mean": mean,
                    "acc_std": std,
                }
            )
        writer.writerow(
            {
                "study": "s",
                "dataset": "mnist",
                "ipc": 1,
                "mode": "random real",
                "eval_net": "ConvNet-3 width 8",
                "eval_epochs": 5,
                "nets": 3,
                "acc_mean": "40.00",
                "acc_std": "1.00",
            }
        )
    figure = figure_from_csv(tmp_path / "s.csv")
    idc, accdd = figure["series"]
    assert idc["label"] == "IDC mode (2 seeds)" and len(idc["points"]) == 1  # checkpoint 2 waits for seed 1
    assert idc["points"][0] == pytest.approx((32.0, 52.0, 8**0.5))
    # Acc-DD's start at 20 s comes after half the first checkpoint (15 s): drawn, with its one seed's spread.
    assert accdd["label"] == "Acc-DD (1 seed)" and [v for p in accdd["points"] for v in p] == pytest.approx(
        [20.0, 30.0, 1.5, 40.0, 65.0, 2.5]
    )
    assert figure["lines"][0] == {
        "label": "random real (ours, 3 nets)",
        "value": 40.0,
        "color": (90, 90, 90),
        "dashed": False,
    }
    assert [(line["label"], line["value"], line["dashed"]) for line in figure["lines"][1:]] == [
        (f"{k} (published)", v, True) for k, v in curve.PUBLISHED[("mnist", 1)].items()
    ]
    assert figure["ylabel"] == "test accuracy (%), ConvNet-3 width 8, 5 epochs" and figure["title"].startswith(
        "mnist, IPC 1:"
    )


# ------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_study_end_to_end_interrupted_run_resumes_and_finished_work_is_skipped(tmp_path, capsys):
    pytest.importorskip("matplotlib")  # the result files include the figure
    config = tiny_config(tmp_path)
    argv = ["--config", str(config), "--study_dir", str(tmp_path / "study"), "--results_dir", str(tmp_path / "curves"), "--output", str(tmp_path / "bench.md"),
            "--budget_minutes", "0.2", "--first_checkpoint", "0.5", "--full_epochs", "1"]  # fmt: skip
    study = curve.open_study(curve.parse_args(argv))
    # A run whose study process died: it checkpoints at its first step and stops.
    outcome = curve.distil_run((study, "idc", 0, -1))  # parent pid -1: never this process's parent
    assert outcome["status"] == "interrupted" and (tmp_path / "study" / "runs" / "idc" / "seed0" / "last.ckpt").exists()
    first = json.loads((tmp_path / "study" / "runs" / "idc" / "seed0" / "progress.json").read_text())
    assert not first.get("done") and "0" in first["snapshots"]
    capsys.readouterr()
    curve.main(argv)
    out = capsys.readouterr().out
    assert "idc seed 0: resuming from" in out and "accdd seed 0: starting" in out
    done = json.loads((tmp_path / "study" / "runs" / "idc" / "seed0" / "progress.json").read_text())
    assert done["done"] and done["snapshots"]["0"]["digest"] == first["snapshots"]["0"]["digest"]
    assert max(int(k) for k in done["snapshots"]) == len(study["checkpoints"])  # the last snapshot is at the budget
    assert done["snapshots"][str(len(study["checkpoints"]))]["wall_s"] >= study["budget_s"]
    rows = list(csv.DictReader((tmp_path / "curves" / "digits-ipc1.csv").open()))
    assert {r["mode"] for r in rows} == {"accdd", "idc", "random real", "full training set"} and all(
        r["acc_mean"] for r in rows
    )
    assert (
        "full training set (1 epoch): " in (tmp_path / "curves" / "digits-ipc1.md").read_text()
    )  # its schedule differs from the curve's
    mtimes = {p: p.stat().st_mtime for p in (tmp_path / "study").rglob("*.pt")}
    curve.main(argv)
    out = capsys.readouterr().out
    assert (
        "accdd seed 0: done earlier, skipped" in out
        and "idc seed 0: done earlier, skipped" in out
        and "0 network(s) to train" in out
    )
    assert {p: p.stat().st_mtime for p in (tmp_path / "study").rglob("*.pt")} == mtimes


# --------------------------------------------------------------------------- image-folder configs
IMAGE_FOLDER_CONFIGS = sorted((ROOT / "configs" / "image_folder").glob("*.yaml"))


@pytest.mark.parametrize("config", IMAGE_FOLDER_CONFIGS, ids=[p.name for p in IMAGE_FOLDER_CONFIGS])
def test_image_folder_configs_parse(config, capsys):
    from lightning_dd.cli import run_cli

    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert (
        "dataset: image_folder" in printed
        and "data_dir: ../shared/data/tiny-imagenet-10" in printed
        and "name: resnet_ap" in printed
    )


def test_image_folder_configs_cover_the_paper_setting_and_a_cpu_variant():
    import yaml

    configs = {p.name: yaml.safe_load(p.read_text()) for p in IMAGE_FOLDER_CONFIGS}
    paper = configs["ipc10.yaml"]["model"]
    assert (paper["net"]["name"], paper["net"]["depth"], paper["factor"], paper["pool"]["epochs"]) == (
        "resnet_ap",
        10,
        3,
        10,
    )
    assert "ipc1_cpu.yaml" in configs


@pytest.mark.slow
@pytest.mark.skipif(
    not TINY_IMAGENET.is_dir(),
    reason="the Tiny ImageNet-10 folder (../shared/data/tiny-imagenet-10) is not on this machine",
)
def test_cpu_image_folder_config_runs_on_a_handful_of_real_images(tmp_path, capsys):
    from lightning_dd.cli import run_cli

    data = tmp_path / "tiny-imagenet-10"
    for split, count in (("train", 4), ("val", 2)):  # one training image per class is held out for validation: 3 stay
        for folder in sorted((TINY_IMAGENET / split).iterdir()):
            (data / split / folder.name).mkdir(parents=True)
            for image in sorted(folder.iterdir())[:count]:
                shutil.copy(image, data / split / folder.name / image.name)
    run_cli(
        [
            "fit",
            "--config",
            str(ROOT / "configs" / "image_folder" / "ipc1_cpu.yaml"),
            f"--data.data_dir={data}",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.accelerator=cpu",
            "--trainer.enable_progress_bar=false",
            f"--model.pool.cache_dir={tmp_path / 'pools'}",
            "--model.pool.size=1",
            "--model.pool.epochs=1",
            "--model.outer_iterations=1",
            "--model.inner_loop=1",
            "--model.batch_real=2",
            "--model.n_data=4",
            "--evaluation.epochs=1",
            "--evaluation.repeats=1",
            "--data.val_per_class=1",
        ]  # fmt: skip
    )
    out = capsys.readouterr().out
    assert "| distilled, 1/class (x4 decoded) | 40 |" in out and "| random real, 1/class | 10 |" in out


def test_time_to_reach_interpolates_between_checkpoints():
    points = [(10.0, 50.0), (20.0, 60.0), (40.0, 70.0)]
    assert curve.time_to_reach(points, 45.0) == 10.0  # already there at the first point
    assert curve.time_to_reach(points, 55.0) == 15.0  # half-way from 50 % at 10 s to 60 % at 20 s
    assert curve.time_to_reach(points, 65.0) == 30.0
    assert curve.time_to_reach(points, 71.0) is None


def test_network_speedups_follow_each_evaluation_networks_own_curves():
    # Per point: time and, per network seed, its accuracy. Network 0: IDC's best 70 % at 200 s, Acc-DD at 70 % by 100 s -> 2x.
    # Network 1: IDC's best 66 % at 200 s; Acc-DD from (100, 58) to (200, 70) reaches 66 at 100 + 100 * 8/12 s -> 1.2x.
    # Network 2: IDC never rises above its start -> None; network 3: Acc-DD never reaches IDC's best -> None; network 4 is not at every point.
    idc = [{"wall_s": 0.0, "nets": {0: 50.0, 1: 50.0, 2: 50.0, 3: 50.0, 4: 1.0}}, {"wall_s": 100.0, "nets": {0: 60.0, 1: 62.0, 2: 49.0, 3: 60.0}},
           {"wall_s": 200.0, "nets": {0: 70.0, 1: 66.0, 2: 48.0, 3: 80.0, 4: 2.0}}]  # fmt: skip
    accdd = [{"wall_s": 50.0, "nets": {0: 50.0, 1: 50.0, 2: 50.0, 3: 50.0, 4: 1.0}}, {"wall_s": 100.0, "nets": {0: 70.0, 1: 58.0, 2: 55.0, 3: 60.0, 4: 2.0}},
             {"wall_s": 200.0, "nets": {0: 75.0, 1: 70.0, 2: 60.0, 3: 79.0, 4: 3.0}}]  # fmt: skip
    assert curve.network_speedups(accdd, idc, "wall_s") == pytest.approx([2.0, 200 / (100 + 800 / 12), None, None])


def test_report_gives_the_speed_up_on_each_evaluation_networks_curves(tmp_path):
    args = study_args(tiny_config(tmp_path), tmp_path, "--repeats", "2", "--full_epochs", "0")
    study = curve.open_study(args)
    study_dir, cfg = Path(study["dir"]), curve.load_config(args.config, None, torch.get_num_threads(), [])
    for mode, walls in {"idc": [0.0, 100.0, 200.0], "accdd": [50.0, 100.0, 200.0]}.items():
        fabricate(study_dir, mode, 0, [(i, 100.0 * i, wall) for i, wall in enumerate(walls)])
    # (mode, network seed) -> accuracy per snapshot, the networks' files written last first (workers finish out of order).
    accs = {
        ("idc", 1): [50.0, 62.0, 66.0],
        ("idc", 0): [50.0, 60.0, 70.0],
        ("accdd", 1): [50.0, 58.0, 70.0],
        ("accdd", 0): [50.0, 70.0, 75.0],
    }
    settings, keys, _ = curve.evaluation_plan(study, cfg, args, 2)
    for (mode, net), values in accs.items():
        for index, acc in enumerate(values):
            curve.write_json(
                study_dir / "evals" / keys["curve"] / f"{mode}-0-{index}" / f"{net}.json",
                {"accuracy": acc, "wall_s": 1.0, "cpu_s": 1.0},
            )
    curve.write_outputs(study, cfg, settings, keys, 2, 3, ["--config", "x"], tmp_path / "curves", None)
    md = (tmp_path / "curves" / "digits-ipc1.md").read_text()
    # Mean curves: IDC 50, 61, 68; Acc-DD 50, 64, 72.5 -> 68 % at 100 + 100 * 4/8.5 = 147 s: 1.36x. Per network: 2.00x and 1.20x.
    assert (
        "**Measured speed-up: between 0.50x and 2.00x** (straight-line interpolation between snapshots: 1.36x)." in md
        and "On each evaluation network's own curves (paired network seeds): 2.00x, 1.20x." in md
    )
    (
        study_dir / "evals" / keys["curve"] / "idc-0-1" / "0.json"
    ).unlink()  # network 0 missing at one snapshot: only network 1 is at every point
    assert curve.scored(study_dir / "evals" / keys["curve"] / "idc-0-1", 2)["by_net"] == {
        1: 62.0
    }  # by network seed, not by position
    curve.write_outputs(study, cfg, settings, keys, 2, 3, ["--config", "x"], tmp_path / "curves", None)
    assert "On each evaluation network's own curves" not in (tmp_path / "curves" / "digits-ipc1.md").read_text()
