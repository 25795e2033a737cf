"""Accuracy against compute: Acc-DD, IDC mode, the two ablations and DM, as curves over wall-clock.

Every mode distils the same configuration (a config file plus ``--override``s) for the same
wall-clock budget, one run per distillation seed. Each run saves its synthetic set at
checkpoints spaced evenly on a log scale of wall-clock (``--first_checkpoint`` seconds, then
``--per_doubling`` checkpoints per doubling of time, ending at the budget), together with the
matching steps, the process CPU seconds and where the time went (setup including Acc-DD's pool
pretraining, matching, network update). The clock counts pool pretraining for the modes that
use a pool (each run pretrains its own), and stops while a snapshot or checkpoint is written.
The snapshots are evaluated afterwards, outside the clock, all with the same networks and
schedule (the config's ``evaluation`` section: network, epochs, augmentation), beside random
real subsets of the same size and the full training set.

A study lives in a folder (``--study_dir``, by default ``lightning_logs/curves/<name>``) and is
resumable: distillation runs save a Lightning checkpoint (module state, its RNG, the clock) at
every snapshot and every ``--ckpt_minutes``; snapshots and every evaluated network are written
atomically as they come. Rerunning the same command skips what is done and continues what was
interrupted; adding seeds or modes to the command appends them to the study.

    python benchmarks/curve.py --config configs/fashion_mnist/ipc1_cpu.yaml --modes accdd idc \\
        --seeds 0 1 --budget_minutes 30 --threads 1 --jobs 2

Results: ``docs/curves/<name>.csv`` (one row per run and checkpoint, plus reference rows),
``docs/curves/<name>.md`` (tables, the measured speed-up, the time breakdown),
``docs/curves/<name>.png`` (accuracy vs wall-clock, log x, mean +- std bands, published values
dashed) and a section of docs/benchmarks.md between ``curve-<name>`` markers.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import statistics
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path

import torch
import yaml
from lightning.pytorch.callbacks import Callback

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MODES, accelerator, apply_overrides, load_config, provenance, write_section  # noqa: E402

from lightning_dd.atomic import atomic_open, atomic_torch_save  # noqa: E402
from lightning_dd.errors import ConfigError, LightningDDError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# Mode name -> (label, settings over the config's model section). Acc-DD and IDC mode are the
# shared benchmark modes; the ablations swap one ingredient each; DM matches mean embeddings on
# fresh random networks (as configs/digits/ipc1_dm.yaml), one step per network, no network update.
STUDY_MODES: dict[str, tuple[str, dict]] = {
    "accdd": (MODES[0][0], dict(MODES[0][1])),
    "idc": (MODES[1][0], dict(MODES[1][1])),
    "pool_noperturb": ("pool, no perturbation", {"model_source": "pool", "perturb": False}),
    "random_perturb": ("random nets + perturbation", {"model_source": "random", "perturb": True}),
    "dm": (
        "DM",
        {
            "model_source": "random",
            "perturb": False,
            "match": "embed",
            "inner_loop": 1,
            "n_data": 0,
            "lr_img": 1.6,  # x ipc/10: about DM's 1.0 on normalised pixels (configs/digits/ipc1_dm.yaml)
            "batch_real": 256,  # DM's real batch per class
            "augment": "color_crop_cutout_flip_scale_rotate",  # DM's DSA strategy (flip dropped where labels need it)
        },
    ),
}
POOL_MODES = ("accdd", "pool_noperturb")
# The paper's evaluation protocol (DC/DSA/IDC and the authors' code): ConvNet-3 of this width, this many epochs.
PAPER_WIDTH, PAPER_EPOCHS = 128, 1000
COLORS = {"accdd": (214, 39, 40), "idc": (31, 119, 180), "pool_noperturb": (255, 127, 14), "random_perturb": (148, 103, 189), "dm": (44, 160, 44)}

# Published values (ConvNet, test accuracy %) drawn as dashed lines: /work-independent copies of
# the anchors in the design notes (DC, DSA, IDC: the authors' READMEs; random subset: DC paper).
PUBLISHED: dict[tuple[str, int], dict[str, float]] = {
    ("fashion_mnist", 1): {"IDC": 81.0, "DSA": 70.6, "DC": 70.5, "random real": 51.4},
    ("fashion_mnist", 10): {"IDC": 86.0, "DSA": 84.6, "DC": 82.3, "random real": 73.8},
    ("fashion_mnist", 50): {"IDC": 86.2, "DSA": 88.7, "DC": 83.6, "random real": 82.5},
    ("mnist", 1): {"IDC": 94.2, "DSA": 88.7, "DC": 91.7, "random real": 64.9},
    ("mnist", 10): {"IDC": 98.4, "DSA": 97.8, "DC": 97.4, "random real": 95.1},
    ("mnist", 50): {"IDC": 99.1, "DSA": 99.2, "DC": 98.8, "random real": 97.9},
    ("cifar10", 1): {"IDC": 50.6, "DSA": 28.8, "DC": 28.3, "random real": 14.4},
    ("cifar10", 10): {"IDC": 67.5, "DSA": 52.1, "DC": 44.9, "random real": 26.0},
    ("cifar10", 50): {"IDC": 74.5, "DSA": 60.6, "DC": 53.9, "random real": 43.4},
}
PUBLISHED_COLORS = {"IDC": (31, 119, 180), "DSA": (127, 127, 127), "DC": (188, 189, 34), "random real": (140, 86, 75)}


# ---------------------------------------------------------------- schedule and bookkeeping
def checkpoint_schedule(first: float, budget: float, per_doubling: int) -> list[float]:
    """Wall-clock checkpoints: ``first * 2**(k / per_doubling)`` below ``budget``, then ``budget``.

    Evenly spaced on a log axis, so a curve has as many points in its first minute as in its
    last hour's doubling.

    Example:
        >>> checkpoint_schedule(30, 180, 1)
        [30.0, 60.0, 120.0, 180.0]
    """
    if first <= 0 or budget <= 0 or per_doubling < 1:
        raise ConfigError(f"need first_checkpoint > 0, budget > 0 and per_doubling >= 1, got {first}, {budget}, {per_doubling}")
    times, k = [], 0
    while (t := first * 2 ** (k / per_doubling)) < budget * (1 - 1e-9):
        times.append(round(t, 6))
        k += 1
    return times + [float(budget)]


def write_json(path: Path, data) -> None:
    with atomic_open(path, "w") as handle:
        json.dump(data, handle, indent=1)


def read_json(path: Path, default=None):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default


def tensor_digest(*tensors: torch.Tensor) -> str:
    """A content hash of tensors: identical snapshots (e.g. every mode's start) are evaluated once."""
    digest = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()[:20]


def settings_digest(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


# ------------------------------------------------------------------------- distillation
class StudyClock(Callback):
    """Snapshots the synthetic set at wall-clock checkpoints, checkpoints the run, ends it at the budget.

    The clock is the setup time of the first fit (data attachment and, in pool modes, pretraining
    the pool) plus the time spent in training; writing snapshots and checkpoints is taken off
    it. Its totals live in the Lightning checkpoint (``state_dict``), so a resumed run continues
    the clock of the state it resumes from.
    """

    def __init__(self, run_dir: Path, checkpoints: list[float], ckpt_seconds: float, parent_pid: int | None = None) -> None:
        self.run_dir, self.checkpoints, self.ckpt_seconds, self.parent_pid = Path(run_dir), list(checkpoints), ckpt_seconds, parent_pid
        self.state = {"next": 0, "wall": 0.0, "cpu": 0.0, "setup_wall": 0.0, "setup_cpu": 0.0, "matching": 0.0, "network": 0.0, "resumed": 0}
        self._segment: tuple[float, float] | None = None
        self._setup_started: tuple[float, float] | None = None
        self._last_ckpt = 0.0
        self._parts_base = {"matching": 0.0, "network": 0.0}
        self.stopped_for: str | None = None

    # Lightning stores this in checkpoints; the live segment is folded in at save time.
    def state_dict(self) -> dict:
        state = dict(self.state)
        if self._segment is not None:
            state["wall"] += time.perf_counter() - self._segment[0]
            state["cpu"] += time.process_time() - self._segment[1]
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        self.state = {**self.state, **state_dict}
        self.state["resumed"] = int(self.state.get("resumed", 0)) + 1

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._setup_started = (time.perf_counter(), time.process_time())

    def on_train_start(self, trainer, pl_module) -> None:
        if self.state["next"] == 0 and self.state["wall"] == 0.0:
            recorded = read_json(self.run_dir / "setup.json")
            if recorded is not None:  # an earlier attempt built the pool and died before its first checkpoint
                self.state["setup_wall"], self.state["setup_cpu"] = recorded["wall"], recorded["cpu"]
            else:
                started = self._setup_started or (time.perf_counter(), time.process_time())
                self.state["setup_wall"] = time.perf_counter() - started[0]
                self.state["setup_cpu"] = time.process_time() - started[1]
                write_json(self.run_dir / "setup.json", {"wall": self.state["setup_wall"], "cpu": self.state["setup_cpu"]})
        self._instrument(pl_module)
        self._segment = (time.perf_counter(), time.process_time())
        if self.state["next"] == 0:
            self._snapshot(trainer, pl_module, nominal=0.0, index=0)
            self.state["next"] = 1

    def _instrument(self, pl_module) -> None:
        """Count the module's matching and network-update seconds (:attr:`DistillModule.part_seconds`) from here on."""
        self._parts_base = {part: self.state[part] - pl_module.part_seconds[part] for part in ("matching", "network")}

    def _read_parts(self, pl_module) -> None:
        for part, base in self._parts_base.items():
            self.state[part] = base + pl_module.part_seconds[part]

    def elapsed(self) -> tuple[float, float]:
        """(wall, CPU) seconds on the clock so far, setup included."""
        state = self.state_dict()
        return state["setup_wall"] + state["wall"], state["setup_cpu"] + state["cpu"]

    def _pause(self):
        """Stop the clock; the returned function restarts it."""
        now = (time.perf_counter(), time.process_time())
        assert self._segment is not None
        self.state["wall"] += now[0] - self._segment[0]
        self.state["cpu"] += now[1] - self._segment[1]
        self._segment = None

        def resume() -> None:
            self._segment = (time.perf_counter(), time.process_time())

        return resume

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._read_parts(pl_module)
        wall, _ = self.elapsed()
        due = [k for k in range(self.state["next"], len(self.checkpoints) + 1) if self.checkpoints[k - 1] <= wall]
        save = False
        if due:
            index = due[-1]  # checkpoints passed within one step (e.g. during pool pretraining) share this snapshot
            self._snapshot(trainer, pl_module, self.checkpoints[index - 1], index)
            self.state["next"] = index + 1
            save = True
        finished = self.state["next"] > len(self.checkpoints)
        orphaned = self.parent_pid is not None and os.getppid() != self.parent_pid
        if wall - self._last_ckpt >= self.ckpt_seconds and getattr(pl_module, "finished_outer", True):
            save = True
        if orphaned and not finished:
            save, self.stopped_for = True, "the study process that started this run has ended"
        if save and not finished:
            resume = self._pause()
            path = self.run_dir / "last.ckpt"
            tmp = path.with_name(".last.ckpt.tmp")
            trainer.save_checkpoint(tmp, weights_only=False)
            os.replace(tmp, path)
            self._last_ckpt = wall
            resume()
        if finished or orphaned:
            trainer.should_stop = True

    def _snapshot(self, trainer, pl_module, nominal: float, index: int) -> None:
        resume = self._pause() if self._segment is not None else (lambda: None)
        wall, cpu = self.elapsed()
        stored, stored_labels = pl_module.distilled()
        decoded, labels = pl_module.decoded()
        name = f"snapshot-{index:02d}.pt"
        atomic_torch_save({"stored": stored, "stored_labels": stored_labels, "decoded": decoded, "labels": labels}, self.run_dir / name)
        hp = pl_module.hparams
        record = {
            "index": index,
            "nominal_s": nominal,
            "wall_s": wall,
            "cpu_s": cpu,
            "setup_wall_s": self.state["setup_wall"],
            "setup_cpu_s": self.state["setup_cpu"],
            "matching_s": self.state["matching"],
            "network_s": self.state["network"],
            "steps": pl_module.outer * hp.inner_loop + pl_module.inner,
            "outer": pl_module.outer,
            "file": name,
            "digest": tensor_digest(decoded, labels),
        }
        progress = read_json(self.run_dir / "progress.json", {"snapshots": {}})
        progress["snapshots"][str(index)] = record
        write_json(self.run_dir / "progress.json", progress)
        print(f"  {self.run_dir.parent.name}/{self.run_dir.name}: snapshot {index} at {wall:.0f} s ({record['steps']} steps)", flush=True)
        resume()


def distil_run(study: dict, mode: str, seed: int, parent_pid: int | None) -> dict:
    """Distil (or continue distilling) one mode and seed; returns its status. Runs in a worker process."""
    import lightning as L

    from lightning_dd import DistillModule
    from lightning_dd.callbacks.interrupt import CheckpointOnInterrupt
    from lightning_dd.cli import check_checkpoint

    run_dir = Path(study["dir"]) / "runs" / mode / f"seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        cfg = load_config(study["config"], None, study["threads"], study["overrides"])
        settings = {**cfg.model, **STUDY_MODES[mode][1], "seed": seed, "outer_iterations": 10**9}
        settings["pool"] = {**settings.get("pool", {}), "cache_dir": str(run_dir / "pool")}
        write_json(run_dir / "settings.json", {"mode": mode, "seed": seed, "model": settings, "data": cfg.data})
        clock = StudyClock(run_dir, study["checkpoints"], study["ckpt_minutes"] * 60, parent_pid)
        interrupt = CheckpointOnInterrupt(dirpath=str(run_dir), filename="interrupted.ckpt")
        candidates = [p for p in (run_dir / "interrupted.ckpt", run_dir / "last.ckpt") if p.exists()]
        resume_from = None
        for path in sorted(candidates, key=lambda p: p.stat().st_mtime, reverse=True):
            try:
                check_checkpoint(str(path))
                resume_from = str(path)
                break
            except LightningDDError:
                continue
        trainer = L.Trainer(
            accelerator=accelerator(study["device"]),
            devices=1,
            max_epochs=-1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            callbacks=[clock, interrupt],
        )
        print(f"{mode} seed {seed}: {'resuming from ' + resume_from if resume_from else 'starting'}", flush=True)
        trainer.fit(DistillModule(**settings), datamodule=cfg.datamodule, ckpt_path=resume_from)
        if interrupt.signal_received is not None or clock.stopped_for:
            return {"mode": mode, "seed": seed, "status": "interrupted", "why": clock.stopped_for or "signal"}
        progress = read_json(run_dir / "progress.json", {"snapshots": {}})
        progress["done"] = True
        write_json(run_dir / "progress.json", progress)
        for path in (run_dir / "last.ckpt", run_dir / "interrupted.ckpt"):
            path.unlink(missing_ok=True)  # done: the snapshots are what the study keeps
        return {"mode": mode, "seed": seed, "status": "done"}
    except Exception as err:  # a failed run must not stop the others
        traceback.print_exc()
        return {"mode": mode, "seed": seed, "status": "failed", "why": f"{type(err).__name__}: {err}"}


def run_done(study_dir: Path, mode: str, seed: int) -> bool:
    return bool(read_json(study_dir / "runs" / mode / f"seed{seed}" / "progress.json", {}).get("done"))


# --------------------------------------------------------------------------- evaluation
def eval_settings(cfg, net=None, epochs: int | None = None) -> dict:
    """What defines an evaluation (its digest names the folder of results)."""
    schedule = asdict(cfg.schedule)
    if epochs is not None:
        schedule["epochs"] = epochs
    net = net or cfg.eval_net or cfg.net
    return {"schedule": schedule, "net": asdict(net), "dataset": cfg.datamodule.info.name}


_CONFIGS: dict = {}


def cached_config(study: dict):
    """The study's config with its data loaded once per process (evaluations train many networks)."""
    key = (study["config"], tuple(study["overrides"]), study["threads"])
    if key not in _CONFIGS:
        _CONFIGS[key] = load_config(study["config"], None, study["threads"], study["overrides"])
    return _CONFIGS[key]


def evaluate_one(study: dict, kind: str, key: str, source: str | None, repeat: int, settings: dict, out: str) -> dict:
    """Train one evaluation network (seed ``repeat``) and write its accuracy to ``out`` atomically."""
    from lightning_dd.classify import TrainSchedule
    from lightning_dd.evaluation import evaluate_full_set, evaluate_random_subsets, evaluate_set
    from lightning_dd.nets import NetSpec

    cfg = cached_config(study)
    schedule = TrainSchedule(**{**settings["schedule"], "milestones": tuple(settings["schedule"]["milestones"])})
    net = NetSpec(**settings["net"])
    dm, device = cfg.datamodule, settings.get("device", study["device"])  # the paper protocol may run elsewhere
    started = (time.perf_counter(), time.process_time())
    if kind == "snapshot":
        snap = torch.load(source, map_location="cpu", weights_only=True)
        acc = evaluate_set(snap["decoded"], snap["labels"], dm.test_data, net, schedule, repeat, device)
    elif kind == "random":
        acc = evaluate_random_subsets(cfg.model["ipc"], dm.train_data, dm.test_data, net, schedule, 1, repeat, device, progress=False).accuracies[0]
    elif kind == "full":
        acc = evaluate_full_set(dm.train_data, dm.test_data, net, schedule, schedule.epochs, 1, repeat, device, progress=False).accuracies[0]
    else:
        raise ValueError(kind)
    result = {"key": key, "repeat": repeat, "accuracy": acc, "device": device, "wall_s": time.perf_counter() - started[0], "cpu_s": time.process_time() - started[1]}
    write_json(Path(out), result)
    print(f"  evaluated {key} net {repeat}: {acc:.2f} % ({result['wall_s']:.0f} s)", flush=True)
    return result


def results_of(folder: Path, repeats: int) -> list[dict]:
    return [r for r in (read_json(folder / f"{k}.json") for k in range(repeats)) if r is not None]


# ------------------------------------------------------------------------------ analysis
def time_to_reach(curve: list[tuple[float, float]], target: float) -> float | None:
    """First time a piecewise-linear accuracy curve (sorted by time) reaches ``target``."""
    previous = (0.0, float("-inf"))
    for t, acc in curve:
        if acc >= target:
            if previous[1] == float("-inf"):
                return t
            t0, a0 = previous
            return t0 + (t - t0) * (target - a0) / (acc - a0) if acc > a0 else t
        previous = (t, acc)
    return None


def interpolate(curve: list[tuple[float, float]], t: float) -> float:
    """Piecewise-linear value of a curve (sorted by time) at ``t`` inside its time range."""
    for (t0, a0), (t1, a1) in zip(curve, curve[1:]):
        if t0 <= t <= t1:
            return a0 if t1 == t0 else a0 + (a1 - a0) * (t - t0) / (t1 - t0)
    if curve and t == curve[0][0]:
        return curve[0][1]
    raise ValueError(f"{t} is outside the curve's time range")


def speedups(reference: list[tuple[float, float]], candidate: list[tuple[float, float]]) -> list[dict]:
    """For each accuracy level the reference curve reaches (its points after the first), the time each curve needs.

    Times are those at which a piecewise-linear curve (linear in time between checkpoints) first
    reaches the level (:func:`time_to_reach`); the speed-up is reference time /
    candidate time, None when the candidate never reaches the level.
    """
    rows = []
    for _, level in reference[1:]:
        t_ref = time_to_reach(reference, level)
        t_cand = time_to_reach(candidate, level)
        rows.append({"level": level, "reference_s": t_ref, "candidate_s": t_cand, "speedup": None if t_cand is None or t_cand <= 0 else t_ref / t_cand})
    return rows


def crossings(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> list[dict]:
    """Where two piecewise-linear curves cross within their common time range.

    Returns ``{"time", "accuracy", "ahead_after"}`` per crossing, ``ahead_after`` being ``"a"``
    or ``"b"``: the curve that is higher just after it.
    """
    if not a or not b:
        return []
    start, end = max(a[0][0], b[0][0]), min(a[-1][0], b[-1][0])
    if start >= end:
        return []
    grid = sorted({t for t, _ in a + b if start <= t <= end} | {start, end})
    found: list[dict] = []
    last: tuple[float, float] | None = None  # the last grid point where the curves differ
    first_tie: float | None = None  # the first point of a run of ties after it
    for t in grid:
        d = interpolate(a, t) - interpolate(b, t)
        if d == 0:
            first_tie = t if first_tie is None else first_tie
            continue
        if last is not None and (d > 0) != (last[1] > 0):
            t0, d0 = last
            tc = first_tie if first_tie is not None else t0 + (t - t0) * d0 / (d0 - d)
            found.append({"time": tc, "accuracy": interpolate(a, tc), "ahead_after": "a" if d > 0 else "b"})
        last, first_tie = (t, d), None
    return found


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2g} s"
    if seconds < 600:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def summarise(study_dir: Path, study: dict, settings_key: str, repeats: int) -> dict:
    """Collect every run's snapshots with their evaluations into per-run rows and per-mode curves."""
    rows, modes = [], {}
    for mode in [m for m in STUDY_MODES if (study_dir / "runs" / m).is_dir()]:
        for seed_dir in sorted((study_dir / "runs" / mode).glob("seed*"), key=lambda p: int(p.name[4:])):
            progress = read_json(seed_dir / "progress.json", {"snapshots": {}})
            for index, record in sorted(progress["snapshots"].items(), key=lambda kv: int(kv[0])):
                results = results_of(study_dir / "evals" / settings_key / record["digest"], repeats)
                accs = [r["accuracy"] for r in results]
                rows.append(
                    {
                        **record,
                        "mode": mode,
                        "seed": int(seed_dir.name[4:]),
                        "done": bool(progress.get("done")),
                        "accuracies": accs,
                        "eval_wall_s": sum(r["wall_s"] for r in results),
                        "acc_mean": statistics.fmean(accs) if accs else None,
                        "acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0 if accs else None,
                    }
                )
    for mode in dict.fromkeys(r["mode"] for r in rows):
        mine = [r for r in rows if r["mode"] == mode and r["acc_mean"] is not None]
        seeds = sorted({r["seed"] for r in mine})
        points = []
        for index in sorted({r["index"] for r in mine}):
            at = [r for r in mine if r["index"] == index]
            if len(at) < len(seeds):  # a checkpoint counts once every seed has it evaluated
                continue
            means = [r["acc_mean"] for r in at]
            spread = statistics.stdev(means) if len(means) > 1 else at[0]["acc_std"]
            points.append(
                {
                    "index": index,
                    "nominal_s": at[0]["nominal_s"],
                    "wall_s": statistics.fmean(r["wall_s"] for r in at),
                    "cpu_s": statistics.fmean(r["cpu_s"] for r in at),
                    "steps": statistics.fmean(r["steps"] for r in at),
                    "mean": statistics.fmean(means),
                    "std": spread,
                    "seeds": len(at),
                }
            )
        modes[mode] = {"seeds": seeds, "points": points}
    return {"rows": rows, "modes": modes}


def reference_row(study_dir: Path, settings_key: str, name: str, repeats: int) -> dict | None:
    results = results_of(study_dir / "evals" / settings_key / name, repeats)
    if not results:
        return None
    accs = [r["accuracy"] for r in results]
    return {"accuracies": accs, "mean": statistics.fmean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else 0.0, "wall_s": sum(r["wall_s"] for r in results)}


# ------------------------------------------------------------------------------ the study
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--config", required=True, help="config whose data, model and evaluation sections are used")
    parser.add_argument("--override", action="append", default=[], metavar="SECTION.KEY=VALUE", help="change one config value for every mode (repeatable), e.g. model.lr_img=0.02")
    parser.add_argument("--modes", nargs="+", default=["accdd", "idc"], choices=list(STUDY_MODES), help="modes to distil (default: accdd idc)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="distillation seeds (default 0); more seeds can be appended later")
    parser.add_argument("--budget_minutes", type=float, default=30.0, help="wall-clock minutes of distillation per run, pool pretraining included")
    parser.add_argument("--first_checkpoint", type=float, default=30.0, help="first snapshot, in seconds of the clock")
    parser.add_argument("--per_doubling", type=int, default=1, help="snapshots per doubling of wall-clock time")
    parser.add_argument("--ckpt_minutes", type=float, default=5.0, help="also checkpoint a run this often (besides at every snapshot)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (two 1-thread runs share 2 cores)")
    parser.add_argument("--jobs", type=int, default=1, help="runs (and evaluation networks) in parallel, as separate processes")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--repeats", type=int, default=None, help="evaluation networks per snapshot, also random-real draws (default: the config's evaluation.repeats, else 3)")
    parser.add_argument("--eval_epochs", type=int, default=None, help="evaluation epochs (default: the config's evaluation.epochs)")
    parser.add_argument("--full_epochs", type=int, default=None, help="epochs of the full-training-set row (default: the config's evaluation.full_set_epochs when above 0, else 2; 0 skips the row)")
    parser.add_argument("--paper_epochs", type=int, default=0, help="also evaluate the best final set by the paper's protocol (ConvNet-3, --paper_width) for this many epochs (0: skip)")
    parser.add_argument("--paper_repeats", type=int, default=3, help="networks of that evaluation")
    parser.add_argument("--paper_width", type=int, default=PAPER_WIDTH, help=f"ConvNet-3 width of that evaluation (the paper's: {PAPER_WIDTH}; other widths separate its effect from the epochs')")
    parser.add_argument("--paper_device", choices=("cpu", "cuda"), default=None, help="where the paper-protocol networks train (default --device): it is outside the clock, and 1000 epochs at width 128 cost about 80 CPU-minutes per network")
    parser.add_argument("--phase", choices=("all", "distil", "evaluate", "report"), default="all", help="distil, evaluate snapshots, write results; all = the three in turn")
    parser.add_argument("--name", default=None, help="study name (default <dataset>-ipc<ipc>): names the study folder and the result files")
    parser.add_argument("--study_dir", default=None, help="study folder (default lightning_logs/curves/<name>)")
    parser.add_argument("--results_dir", default="docs/curves", help="where the CSV, Markdown and PNG go")
    parser.add_argument("--output", default="docs/benchmarks.md", help="document that receives the results section")
    parser.add_argument("--note", default="", help="a sentence printed under the study's title (e.g. what else ran on the machine)")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.threads < 1 or args.budget_minutes <= 0 or (args.repeats is not None and args.repeats < 1):
        parser.error("need --jobs >= 1, --threads >= 1, --budget_minutes > 0 and --repeats >= 1")
    return args


def open_study(args: argparse.Namespace) -> tuple[dict, dict]:
    """Create or reopen the study folder; a reopened study must have the same distillation settings."""
    raw = apply_overrides(yaml.safe_load(Path(args.config).read_text()), args.override)
    dataset, ipc = raw.get("data", {}).get("dataset", "digits"), raw["model"]["ipc"]
    name = args.name or f"{dataset}-ipc{ipc}"
    study_dir = Path(args.study_dir or ROOT / "lightning_logs" / "curves" / name)
    budget = args.budget_minutes * 60
    signature = {
        "model": raw["model"],
        "data": raw.get("data", {}),
        "budget_s": budget,
        "checkpoints": checkpoint_schedule(args.first_checkpoint, budget, args.per_doubling),
        "device": args.device,
        "threads": args.threads,  # the clock depends on it: one study, one thread count
    }
    recorded = read_json(study_dir / "study.json")
    if recorded is not None and recorded["signature"] != signature:
        changed = sorted(k for k in signature if signature[k] != recorded["signature"].get(k))
        raise ConfigError(f"study folder {study_dir} was distilled with other settings ({', '.join(changed)} differ); rerun with the same config, overrides, budget, checkpoints and threads, or pick another --name")
    if recorded is None:
        write_json(study_dir / "study.json", {"signature": signature, "config": args.config, "overrides": args.override})
    study = {
        "dir": str(study_dir),
        "name": name,
        "config": args.config,
        "overrides": args.override,
        "checkpoints": signature["checkpoints"],
        "budget_s": budget,
        "ckpt_minutes": args.ckpt_minutes,
        "threads": args.threads,
        "device": args.device,
        "note": args.note,
    }
    return study, raw


def run_parallel(function, tasks: list[tuple], jobs: int) -> list:
    if jobs == 1 or len(tasks) <= 1:
        return [function(*t) for t in tasks]
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        return list(pool.map(function, *zip(*tasks)))


def distil_phase(study: dict, args: argparse.Namespace) -> list[dict]:
    study_dir = Path(study["dir"])
    pending = [(m, s) for s in args.seeds for m in args.modes if not run_done(study_dir, m, s)]
    for m, s in [(m, s) for s in args.seeds for m in args.modes if run_done(study_dir, m, s)]:
        print(f"{m} seed {s}: done earlier, skipped", flush=True)
    parent = os.getpid() if args.jobs > 1 and len(pending) > 1 else None
    outcomes = run_parallel(distil_run, [(study, m, s, parent) for m, s in pending], args.jobs)
    for outcome in outcomes:
        print(f"{outcome['mode']} seed {outcome['seed']}: {outcome['status']}{' (' + outcome['why'] + ')' if 'why' in outcome else ''}", flush=True)
    return outcomes


def evaluation_plan(study: dict, cfg, args: argparse.Namespace, repeats: int) -> tuple[dict, dict, list[tuple]]:
    """The evaluation settings (curve, full set, paper protocol) and the networks still to train."""
    from lightning_dd.nets import NetSpec

    study_dir = Path(study["dir"])
    curve = eval_settings(cfg)
    curve_key = settings_digest(curve)
    tasks: list[tuple] = []

    def want(kind: str, key: str, source: str | None, settings: dict, digest: str, count: int) -> None:
        folder = study_dir / "evals" / digest / key
        write_json(study_dir / "evals" / digest / "settings.json", settings)
        for r in range(count):
            if not (folder / f"{r}.json").exists():
                tasks.append((study, kind, key, source, r, settings, str(folder / f"{r}.json")))

    seen = set()
    for mode_dir in sorted((study_dir / "runs").glob("*")):
        for seed_dir in sorted(mode_dir.glob("seed*")):
            for record in read_json(seed_dir / "progress.json", {"snapshots": {}})["snapshots"].values():
                if record["digest"] not in seen:
                    seen.add(record["digest"])
                    want("snapshot", record["digest"], str(seed_dir / record["file"]), curve, curve_key, repeats)
    want("random", f"random-real-ipc{cfg.model['ipc']}", None, curve, curve_key, repeats)
    full_epochs = args.full_epochs if args.full_epochs is not None else (cfg.evaluation.get("full_set_epochs") or 2)
    full = eval_settings(cfg, epochs=full_epochs) if full_epochs > 0 else None
    if full is not None:
        want("full", "full-training-set", None, full, settings_digest(full), repeats)
    paper = None
    if args.paper_epochs > 0:
        best = best_final(summarise(study_dir, study, curve_key, repeats))
        if best is None:
            print("paper protocol: no finished, evaluated run yet; evaluate the curve first", flush=True)
        else:
            net = NetSpec(**{**asdict(cfg.net), "name": "convnet", "depth": 3, "width": args.paper_width})
            paper = eval_settings(cfg, net=net, epochs=args.paper_epochs)
            paper["device"] = args.paper_device or study["device"]
            paper["chosen"] = {"mode": best["mode"], "seed": best["seed"], "digest": best["digest"]}
            seed_dir = study_dir / "runs" / best["mode"] / f"seed{best['seed']}"
            want("snapshot", best["digest"], str(seed_dir / best["file"]), paper, settings_digest(paper), args.paper_repeats)
    return {"curve": curve, "full": full, "paper": paper}, {"curve": curve_key, "full": full and settings_digest(full), "paper": paper and settings_digest(paper)}, tasks


def best_final(summary: dict) -> dict | None:
    """The finished run whose final snapshot scored highest on the curve's evaluation."""
    finals = {}
    for row in summary["rows"]:
        if row["done"] and row["acc_mean"] is not None:
            key = (row["mode"], row["seed"])
            if key not in finals or row["index"] > finals[key]["index"]:
                finals[key] = row
    return max(finals.values(), key=lambda r: r["acc_mean"], default=None)


# ------------------------------------------------------------------------------- outputs
CSV_FIELDS = [
    "study", "dataset", "ipc", "mode", "seed", "checkpoint", "nominal_s", "wall_s", "cpu_s", "setup_wall_s", "setup_cpu_s",
    "matching_s", "network_s", "steps", "outer", "eval_net", "eval_epochs", "nets", "acc_mean", "acc_std", "accuracies", "eval_wall_s",
]  # fmt: skip


def net_name(net: dict) -> str:
    return f"{'ConvNet' if net['name'] == 'convnet' else 'ResNet-AP'}-{net['depth']} width {net['width']}"


def write_outputs(study: dict, cfg, settings: dict, keys: dict, repeats: int, paper_repeats: int, argv: list[str] | None, results_dir: Path, output: Path | None) -> dict:
    """CSV, Markdown and PNG for the study, and its section of the benchmarks document."""
    from curve_plot import plot_curves

    study_dir = Path(study["dir"])
    name, dataset, ipc = study["name"], cfg.datamodule.info.name, cfg.model["ipc"]
    summary = summarise(study_dir, study, keys["curve"], repeats)
    curve = settings["curve"]
    refs = {"random real": reference_row(study_dir, keys["curve"], f"random-real-ipc{ipc}", repeats)}
    if keys["full"]:
        refs["full training set"] = reference_row(study_dir, keys["full"], "full-training-set", repeats)
    paper_row = None
    if keys["paper"]:
        chosen = settings["paper"]["chosen"]
        paper_row = reference_row(study_dir, keys["paper"], chosen["digest"], paper_repeats)
    results_dir.mkdir(parents=True, exist_ok=True)

    # CSV: one row per run and checkpoint, then the reference rows.
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for r in summary["rows"]:
        writer.writerow(
            {
                "study": name, "dataset": dataset, "ipc": ipc, "mode": r["mode"], "seed": r["seed"], "checkpoint": r["index"],
                "nominal_s": f"{r['nominal_s']:.1f}", "wall_s": f"{r['wall_s']:.1f}", "cpu_s": f"{r['cpu_s']:.1f}",
                "setup_wall_s": f"{r['setup_wall_s']:.1f}", "setup_cpu_s": f"{r['setup_cpu_s']:.1f}", "matching_s": f"{r['matching_s']:.1f}",
                "network_s": f"{r['network_s']:.1f}", "steps": r["steps"], "outer": r["outer"], "eval_net": net_name(curve["net"]),
                "eval_epochs": curve["schedule"]["epochs"], "nets": len(r["accuracies"]),
                "acc_mean": "" if r["acc_mean"] is None else f"{r['acc_mean']:.2f}", "acc_std": "" if r["acc_std"] is None else f"{r['acc_std']:.2f}",
                "accuracies": ";".join(f"{a:.2f}" for a in r["accuracies"]), "eval_wall_s": f"{r['eval_wall_s']:.1f}",
            }
        )  # fmt: skip
    reference_settings = {"random real": curve, "full training set": settings["full"]}
    for label, row in refs.items():
        if row is not None:
            s = reference_settings[label]
            writer.writerow({"study": name, "dataset": dataset, "ipc": ipc, "mode": label, "eval_net": net_name(s["net"]), "eval_epochs": s["schedule"]["epochs"], "nets": len(row["accuracies"]), "acc_mean": f"{row['mean']:.2f}", "acc_std": f"{row['std']:.2f}", "accuracies": ";".join(f"{a:.2f}" for a in row["accuracies"]), "eval_wall_s": f"{row['wall_s']:.1f}"})
    if paper_row is not None:
        chosen, s = settings["paper"]["chosen"], settings["paper"]
        writer.writerow({"study": name, "dataset": dataset, "ipc": ipc, "mode": f"paper protocol: {chosen['mode']}", "seed": chosen["seed"], "eval_net": net_name(s["net"]), "eval_epochs": s["schedule"]["epochs"], "nets": len(paper_row["accuracies"]), "acc_mean": f"{paper_row['mean']:.2f}", "acc_std": f"{paper_row['std']:.2f}", "accuracies": ";".join(f"{a:.2f}" for a in paper_row["accuracies"]), "eval_wall_s": f"{paper_row['wall_s']:.1f}"})
    with atomic_open(results_dir / f"{name}.csv", "w") as handle:
        handle.write(buffer.getvalue())

    # PNG
    published = PUBLISHED.get((dataset, ipc), {})
    series = []
    for mode, data in summary["modes"].items():
        # A start snapshot is drawn only where it comes after pool pretraining: at ~0 s it would stretch the log axis.
        pts = [(p["wall_s"], p["mean"], p["std"]) for p in data["points"] if p["index"] > 0 or p["wall_s"] >= study["checkpoints"][0] / 2]
        if pts:
            series.append({"label": f"{STUDY_MODES[mode][0]} ({len(data['seeds'])} seed{'s' if len(data['seeds']) > 1 else ''})", "color": COLORS[mode], "points": pts})
    lines = [{"label": f"{k} (ours, {len(v['accuracies'])} nets)", "value": v["mean"], "color": (90, 90, 90) if k == "random real" else (0, 0, 0), "dashed": False} for k, v in refs.items() if v is not None]
    lines += [{"label": f"{k} (published)", "value": v, "color": PUBLISHED_COLORS[k], "dashed": True} for k, v in published.items()]
    title = f"{dataset}, IPC {ipc}: test accuracy vs distillation wall-clock"
    plot_curves(results_dir / f"{name}.png", series, lines, title, "wall-clock seconds, pool pretraining included (log scale)", f"test accuracy (%), {net_name(curve['net'])}, {curve['schedule']['epochs']} epochs")

    body = markdown(study, cfg, summary, refs, paper_row, settings, repeats, published, argv)
    with atomic_open(results_dir / f"{name}.md", "w") as handle:
        handle.write(body.replace(f"](curves/{name}.png)", f"]({name}.png)") + "\n")
    if output is not None:
        write_section(output, f"curve-{name}", body)
    return summary


def markdown(study: dict, cfg, summary: dict, refs: dict, paper_row: dict | None, settings: dict, repeats: int, published: dict, argv) -> str:
    name, dataset, ipc = study["name"], cfg.datamodule.info.name, cfg.model["ipc"]
    curve = settings["curve"]
    modes = list(summary["modes"])
    out = [f"## Accuracy vs wall-clock: {dataset}, IPC {ipc} (study `{name}`)", ""]
    if study.get("note"):
        out += [study["note"], ""]
    out += [f"![accuracy vs wall-clock](curves/{name}.png)", ""]
    # Curve table: one row per checkpoint, one column per mode.
    header = "| checkpoint | " + " | ".join(f"{STUDY_MODES[m][0]}: acc % (steps, s)" for m in modes) + " |"
    out += [header, "|---:|" + "---|" * len(modes)]
    indices = sorted({p["index"] for m in modes for p in summary["modes"][m]["points"]})
    for index in indices:
        nominal = next(p["nominal_s"] for m in modes for p in summary["modes"][m]["points"] if p["index"] == index)
        cells = []
        for m in modes:
            p = next((p for p in summary["modes"][m]["points"] if p["index"] == index), None)
            cells.append("-" if p is None else f"{p['mean']:.2f} +- {p['std']:.2f} ({p['steps']:.0f}, {p['wall_s']:.0f} s)")
        out.append(f"| {'start' if index == 0 else format_seconds(nominal)} | " + " | ".join(cells) + " |")
    out.append("")
    full_epochs = settings["full"]["schedule"]["epochs"] if settings.get("full") else None
    ref_names = {"full training set": f"full training set ({full_epochs} epoch{'s' if full_epochs != 1 else ''})"}  # its own, short schedule
    ref_text = [f"{ref_names.get(k, k)}: {v['mean']:.2f} +- {v['std']:.2f} % ({len(v['accuracies'])} net{'s' if len(v['accuracies']) != 1 else ''})" for k, v in refs.items() if v is not None]
    if published:
        ref_text.append("published: " + ", ".join(f"{k} {v:.1f} %" for k, v in published.items()))
    if ref_text:
        out += ["References: " + "; ".join(ref_text) + ".", ""]
    # The measured speed-up.
    acc = summary["modes"].get("accdd", {}).get("points", [])
    idc = summary["modes"].get("idc", {}).get("points", [])
    if acc and idc:
        a_curve, i_curve = [(p["wall_s"], p["mean"]) for p in acc], [(p["wall_s"], p["mean"]) for p in idc]
        out.append(speedup_sentence(i_curve, a_curve))
        out += ["", "| IDC mode accuracy (%) | IDC mode reaches it at | Acc-DD reaches it at | speed-up |", "|---:|---:|---:|---:|"]
        for row in speedups(i_curve, a_curve):
            if row["speedup"] is not None:
                speed = f"{row['speedup']:.2f}x"
            elif row["candidate_s"] is not None:
                speed = "- (reached at the start)"
            else:
                speed = f"< {row['reference_s'] / a_curve[-1][0]:.2f}x (not reached)"
            out.append(f"| {row['level']:.2f} | {format_seconds(row['reference_s'])} | {format_seconds(row['candidate_s']) if row['candidate_s'] is not None else 'not reached'} | {speed} |")
        out += ["", crossing_sentence(a_curve, i_curve), ""]
    # Where the time went.
    out += ["| mode | seeds | setup incl. pool (s) | matching (s) | network update (s) | other (s) | CPU s / wall s | evaluation (s, outside the clock) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for m in modes:
        finals = {}
        for r in summary["rows"]:
            if r["mode"] == m and (r["seed"] not in finals or r["index"] > finals[r["seed"]]["index"]):
                finals[r["seed"]] = r
        f = list(finals.values())
        mean = lambda key: statistics.fmean(r[key] for r in f)  # noqa: E731
        other = mean("wall_s") - mean("setup_wall_s") - mean("matching_s") - mean("network_s")
        evals = sum(r["eval_wall_s"] for r in summary["rows"] if r["mode"] == m)
        out.append(f"| {STUDY_MODES[m][0]} | {len(f)} | {mean('setup_wall_s'):.0f} | {mean('matching_s'):.0f} | {mean('network_s'):.0f} | {other:.0f} | {mean('cpu_s') / max(mean('wall_s'), 1e-9):.2f} | {evals:.0f} |")
    out.append("")
    if paper_row is not None:
        chosen, s = settings["paper"]["chosen"], settings["paper"]
        label = "Paper protocol" if (s["net"]["width"], s["schedule"]["epochs"]) == (PAPER_WIDTH, PAPER_EPOCHS) else "Evaluation off the paper's width and epochs"
        out += [f"{label}: the best final set ({STUDY_MODES[chosen['mode']][0]}, seed {chosen['seed']}, chosen on the curve's evaluation above) trained on {net_name(s['net'])} for {s['schedule']['epochs']} epochs ({'on the GPU' if s.get('device') == 'cuda' else 'on the CPU'}): {paper_row['mean']:.2f} +- {paper_row['std']:.2f} % ({len(paper_row['accuracies'])} nets).", ""]
    pending = [r for r in summary["rows"] if r["acc_mean"] is None]
    unfinished = sorted({(r["mode"], r["seed"]) for r in summary["rows"] if not r["done"]})
    notes = [
        f"Each run distils for {format_seconds(study['budget_s'])} of wall-clock ({study['threads']} thread(s) per run), measured from the start of fit, so pool pretraining is on Acc-DD's clock (and on the pool ablation's; each run pretrains its own pool: the setup column); snapshot and checkpoint writes are off the clock.",
        f"Snapshots at {', '.join(format_seconds(t) for t in study['checkpoints'])} (log-spaced; a snapshot is taken at the first step boundary after its checkpoint, and checkpoints passed during pool pretraining share the first snapshot after it); x is the mean over seeds of the actual time.",
        f"Evaluation, outside the clock and the same for every mode and checkpoint (the config's evaluation section, as `lightning-dd fit` evaluates it, so that the curves differ only in the sets): fresh {net_name(curve['net'])} networks, {curve['schedule']['epochs']} epochs, SGD lr {curve['schedule']['lr']}, batch {curve['schedule']['batch_size']}, DSA ({curve['schedule']['augment']}) + CutMix p {curve['schedule']['cutmix_p']}, final-epoch test accuracy; {repeats} networks per snapshot with the same network seeds for every snapshot (paired). "
        "Cell: mean over seeds of the per-seed mean, +- the std across seeds (across the networks when there is one seed); steps are matching steps (inner iterations).",
        f"Speed-up: curves are piecewise linear in time between checkpoints; for each accuracy IDC mode reaches, the time at which each curve first reaches it.",
    ]
    over = [m for m in modes if any(r["mode"] == m and r["index"] == 0 and r["setup_wall_s"] > study["budget_s"] for r in summary["rows"])]
    if over:
        notes.append(f"Setup (pool pretraining) alone took longer than the budget for {', '.join(STUDY_MODES[m][0] for m in over)}: such a run takes one matching step and its last snapshot, so its curve starts after the budget.")
    if unfinished:
        notes.append("Unfinished runs (rerun the command to continue): " + ", ".join(f"{m} seed {s}" for m, s in unfinished) + ".")
    if pending:
        notes.append(f"{len(pending)} snapshot(s) not evaluated yet (rerun with --phase evaluate).")
    out += [" ".join(notes), "", provenance("benchmarks/curve.py", argv, study["threads"])]
    return "\n".join(out)


def speedup_sentence(idc: list[tuple[float, float]], accdd: list[tuple[float, float]]) -> str:
    """One line: how long Acc-DD took to reach IDC mode's best mean accuracy."""
    t_best, best = max(idc, key=lambda p: (p[1], -p[0]))
    t_idc = time_to_reach(idc, best)
    t_acc = time_to_reach(accdd, best)
    if t_acc is None:
        return f"**Measured speed-up: none.** Acc-DD did not reach IDC mode's best mean accuracy ({best:.2f} %, reached at {format_seconds(t_idc)}) within {format_seconds(accdd[-1][0])}; its best was {max(a for _, a in accdd):.2f} %."
    if t_acc <= 0:
        return f"**Measured speed-up: not defined.** Acc-DD's set at the start of its clock already had IDC mode's best mean accuracy ({best:.2f} %, which IDC mode reached at {format_seconds(t_idc)})."
    return f"**Measured speed-up: {t_idc / t_acc:.2f}x.** Acc-DD reached IDC mode's best mean accuracy ({best:.2f} %, which IDC mode reached at {format_seconds(t_idc)}) at {format_seconds(t_acc)}."


def crossing_sentence(accdd: list[tuple[float, float]], idc: list[tuple[float, float]]) -> str:
    found = crossings(accdd, idc)
    if not found:
        start, end = max(accdd[0][0], idc[0][0]), min(accdd[-1][0], idc[-1][0])
        if start >= end:
            return "The curves share no time range, so they cannot cross."
        ahead = "Acc-DD" if interpolate(accdd, end) > interpolate(idc, end) else "IDC mode"
        return f"The mean curves do not cross between {format_seconds(start)} and {format_seconds(end)}: {ahead} is ahead throughout."
    parts = [f"at {format_seconds(c['time'])} ({c['accuracy']:.2f} %), {'Acc-DD' if c['ahead_after'] == 'a' else 'IDC mode'} ahead after" for c in found]
    return "The mean curves cross " + "; ".join(parts) + "."


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        study, raw = open_study(args)
        phases = ("distil", "evaluate", "report") if args.phase == "all" else (args.phase,)
        failed = []
        if "distil" in phases:
            failed = [o for o in distil_phase(study, args) if o["status"] != "done"]
        cfg = load_config(args.config, args.eval_epochs, args.threads, args.override)
        repeats = args.repeats or int(cfg.evaluation.get("repeats", 3))
        settings, keys, tasks = evaluation_plan(study, cfg, args, repeats)
        if "evaluate" in phases:
            print(f"evaluating: {len(tasks)} network(s) to train", flush=True)
            run_parallel(evaluate_one, tasks, args.jobs)
            if args.paper_epochs > 0 and settings["paper"] is None:
                settings, keys, tasks = evaluation_plan(study, cfg, args, repeats)  # the curve is now evaluated: pick the best set
                run_parallel(evaluate_one, tasks, args.jobs)
        if "report" in phases or "evaluate" in phases:
            out = write_outputs(study, cfg, settings, keys, repeats, args.paper_repeats, argv, Path(args.results_dir), Path(args.output) if args.output else None)
            for mode, data in out["modes"].items():
                print(f"{STUDY_MODES[mode][0]}: " + ", ".join(f"{p['mean']:.1f}% at {p['wall_s']:.0f}s" for p in data["points"]), flush=True)
            print(f"results: {Path(args.results_dir) / study['name']}.{{csv,md,png}}", flush=True)
        if failed:
            raise SystemExit(f"{len(failed)} run(s) did not finish: " + "; ".join(f"{o['mode']} seed {o['seed']}: {o['status']} ({o.get('why', '')})" for o in failed) + "; rerun the same command to continue")
    except LightningDDError as err:
        raise SystemExit(f"curve.py: error: {err}") from None


if __name__ == "__main__":
    main()
