"""Accuracy against compute: Acc-DD, IDC mode, the two ablations and DM, as curves over wall-clock (or CPU time).

Every mode distils the same config (plus ``--override``s) for the same budget of wall-clock (or CPU time: ``--clock cpu``), one run per seed, saving its set
at log-spaced checkpoints. The clock includes pool pretraining, not file writes nor the evaluations that follow (the config's
``evaluation`` section, beside random real subsets and the full training set). Rerunning the command resumes the study.

    python -m benchmarks.curve --config configs/fashion_mnist/ipc1_cpu.yaml --modes accdd idc --seeds 0 1 --budget_minutes 30 --threads 1 --jobs 2
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import hashlib
import itertools
import os
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import torch
import yaml
from lightning.pytorch.callbacks import Callback

from lightning_dd import DistillModule, evaluation
from lightning_dd.utils.atomic import atomic_open, atomic_torch_save
from lightning_dd.callbacks.interrupt import CheckpointOnInterrupt
from lightning_dd.classify import TrainSchedule
from lightning_dd.cli import check_checkpoint
from lightning_dd.utils.errors import ConfigError, LightningDDError
from lightning_dd.nets import NetSpec

from .curve_plot import plot_csv
from .parts import PartSeconds
from .report import ROOT, md_table, mean_std, provenance, write_section
from .runner import MODES, apply_overrides, digest, load_config, parallel_map, read_json, trainer, write_json

# Mode -> (label, model settings); the ablations swap one ingredient each; DM as configs/digits/ipc1_dm.yaml (lr_img 1.6 x ipc/10: its 1.0 on normalised pixels).
STUDY_MODES: dict[str, tuple[str, dict]] = {
    **{mode: (label, dict(settings)) for mode, (label, settings) in zip(("accdd", "idc"), MODES)},
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
            "lr_img": 1.6,
            "batch_real": 256,
            "augment": "color_crop_cutout_flip_scale_rotate",
        },
    ),
}
# The paper's evaluation protocol (DC/DSA/IDC and the authors' code): ConvNet-3 of this width, this many epochs.
PAPER_WIDTH, PAPER_EPOCHS = 128, 1000
COLORS = {
    "accdd": (214, 39, 40),
    "idc": (31, 119, 180),
    "pool_noperturb": (255, 127, 14),
    "random_perturb": (148, 103, 189),
    "dm": (44, 160, 44),
}
# Published ConvNet test accuracies (%), drawn dashed: DC, DSA, IDC from the authors' READMEs; random subsets from the DC paper.
PUBLISHED: dict[tuple[str, int], dict[str, float]] = {
    key: dict(zip(("IDC", "DSA", "DC", "random real"), values))
    for key, values in {
        ("fashion_mnist", 1): (81.0, 70.6, 70.5, 51.4),
        ("fashion_mnist", 10): (86.0, 84.6, 82.3, 73.8),
        ("fashion_mnist", 50): (86.2, 88.7, 83.6, 82.5),
        ("mnist", 1): (94.2, 88.7, 91.7, 64.9),
        ("mnist", 10): (98.4, 97.8, 97.4, 95.1),
        ("mnist", 50): (99.1, 99.2, 98.8, 97.9),
        ("cifar10", 1): (50.6, 28.8, 28.3, 14.4),
        ("cifar10", 10): (67.5, 52.1, 44.9, 26.0),
        ("cifar10", 50): (74.5, 60.6, 53.9, 43.4),
    }.items()
}
PUBLISHED_COLORS = {"IDC": (31, 119, 180), "DSA": (127, 127, 127), "DC": (188, 189, 34), "random real": (140, 86, 75)}
CSV_FIELDS = (
    "study dataset ipc mode seed checkpoint nominal_s wall_s cpu_s setup_wall_s setup_cpu_s matching_s network_s steps outer "
    "eval_net eval_epochs nets acc_mean acc_std accuracies eval_wall_s clock"
).split()
study_config = functools.cache(load_config)  # evaluations train many networks: their process loads the data once
CLOCKS = {"wall": "wall-clock", "cpu": "CPU time"}  # --clock: what the budget and the snapshots count
MIN_GAIN_STEPS = 10  # the fewest matching steps a points-per-1 000-steps rate is given over


def checkpoint_schedule(first: float, budget: float, per_doubling: int) -> list[float]:
    """``first * 2**(k / per_doubling)`` below ``budget``, then ``budget``: as many points per doubling of time early as late."""
    if first <= 0 or budget <= 0 or per_doubling < 1:
        raise ConfigError(
            f"need first_checkpoint > 0, budget > 0 and per_doubling >= 1, got {first}, {budget}, {per_doubling}"
        )
    times = itertools.takewhile(
        lambda t: t < budget * (1 - 1e-9), (first * 2 ** (k / per_doubling) for k in itertools.count())
    )
    return [round(t, 6) for t in times] + [float(budget)]


def now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


class StudyClock(Callback):
    """Snapshots the set at checkpoints of ``clock`` ("wall", or "cpu": this process's CPU seconds), ends the run at the budget; the clock (setup included, file writes not) resumes with the run."""

    def __init__(
        self,
        run_dir: Path,
        checkpoints: list[float],
        ckpt_seconds: float,
        parent_pid: int | None = None,
        clock: str = "wall",
    ) -> None:
        self.run_dir, self.checkpoints, self.ckpt_seconds, self.parent_pid, self.clock = (
            Path(run_dir),
            list(checkpoints),
            ckpt_seconds,
            parent_pid,
            clock,
        )
        self.state = {
            "next": 0,
            "wall": 0.0,
            "cpu": 0.0,
            "setup_wall": 0.0,
            "setup_cpu": 0.0,
            "matching": 0.0,
            "network": 0.0,
        }
        self.segment = self.setup_started = None  # (wall, CPU) when the running clock last started / when setup began
        self.last_ckpt, self.parts_base, self.stopped_for = 0.0, {}, None
        self.parts = PartSeconds()  # the trainer's profiler: seconds of DistillModule's matching and network update

    def state_dict(self) -> dict:
        """What Lightning stores in checkpoints, the running segment folded in."""
        wall, cpu = now()
        live = (
            {"wall": self.state["wall"] + wall - self.segment[0], "cpu": self.state["cpu"] + cpu - self.segment[1]}
            if self.segment
            else {}
        )
        return {**self.state, **live}

    def load_state_dict(self, state_dict: dict) -> None:
        self.state = {**self.state, **state_dict}

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.setup_started = now()

    def on_train_start(self, trainer, pl_module) -> None:
        if self.state["next"] == 0:  # not resumed: the setup's time and the start's snapshot
            if (
                setup := read_json(self.run_dir / "setup.json")
            ) is None:  # else from an attempt that built the pool and died before its first checkpoint
                started, (wall, cpu) = self.setup_started or now(), now()
                write_json(self.run_dir / "setup.json", setup := {"wall": wall - started[0], "cpu": cpu - started[1]})
            self.state["setup_wall"], self.state["setup_cpu"] = setup["wall"], setup["cpu"]
            self.snapshot(pl_module, 0)
        # Count the module's matching and network-update seconds (the profiler's actions) from here on.
        self.parts_base = {part: self.state[part] - self.parts.seconds[part] for part in ("matching", "network")}
        self.segment = now()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.state.update({part: base + self.parts.seconds[part] for part, base in self.parts_base.items()})
        self.state, self.segment = (
            self.state_dict(),
            None,
        )  # the clock stops until the end of this hook: writing files is not distilling
        elapsed = self.state[f"setup_{self.clock}"] + self.state[self.clock]
        due = [k for k in range(self.state["next"], len(self.checkpoints) + 1) if self.checkpoints[k - 1] <= elapsed]
        if due:  # checkpoints passed within one step (e.g. during pool pretraining) share this snapshot
            self.snapshot(pl_module, due[-1])
        finished = self.state["next"] > len(self.checkpoints)
        orphaned = self.parent_pid is not None and os.getppid() != self.parent_pid
        if not finished and (
            due
            or orphaned
            or (elapsed - self.last_ckpt >= self.ckpt_seconds and getattr(pl_module, "finished_outer", True))
        ):
            trainer.save_checkpoint(self.run_dir / ".last.ckpt.tmp", weights_only=False)
            os.replace(self.run_dir / ".last.ckpt.tmp", self.run_dir / "last.ckpt")
            self.last_ckpt = elapsed
        if finished or orphaned:
            trainer.should_stop = True
            self.stopped_for = None if finished else "the study process that started this run has ended"
        self.segment = now()

    def snapshot(self, pl_module, index: int) -> None:
        state, name = self.state, f"snapshot-{index:02d}.pt"
        (stored, stored_labels), (decoded, labels) = pl_module.distilled(), pl_module.decoded()
        atomic_torch_save(
            {"stored": stored, "stored_labels": stored_labels, "decoded": decoded, "labels": labels},
            self.run_dir / name,
        )
        tensors = [
            t.detach().cpu().contiguous() for t in (decoded, labels)
        ]  # a content hash: identical sets (e.g. every mode's start) are evaluated once
        content = hashlib.sha256(
            b"".join(f"{t.dtype}{tuple(t.shape)}".encode() + t.numpy().tobytes() for t in tensors)
        ).hexdigest()[:20]
        record = {
            "index": index, "nominal_s": self.checkpoints[index - 1] if index else 0.0, "wall_s": state["setup_wall"] + state["wall"], "cpu_s": state["setup_cpu"] + state["cpu"],
            **{f"{k}_s": state[k] for k in ("setup_wall", "setup_cpu", "matching", "network")}, "steps": pl_module.outer * pl_module.hparams.inner_loop + pl_module.inner,
            "outer": pl_module.outer, "file": name, "digest": content,
        }  # fmt: skip
        progress = read_json(self.run_dir / "progress.json", {"snapshots": {}})
        progress["snapshots"][str(index)] = record
        write_json(self.run_dir / "progress.json", progress)
        state["next"] = index + 1
        print(
            f"  {self.run_dir.parent.name}/{self.run_dir.name}: snapshot {index} at {record[f'{self.clock}_s']:.0f} s ({record['steps']} steps)",
            flush=True,
        )


def distil_run(task: tuple) -> dict:
    """Distil (or continue distilling) one ``(study, mode, seed, parent_pid)``; returns its status. Runs in a worker process."""
    study, mode, seed, parent_pid = task
    run_dir, outcome = (
        Path(study["dir"]) / "runs" / mode / f"seed{seed}",
        {"mode": mode, "seed": seed},
    )  # atomic writes create the folder
    try:
        cfg = load_config(study["config"], None, study["threads"], study["overrides"])
        settings = {
            **cfg.model,
            **STUDY_MODES[mode][1],
            "seed": seed,
            "outer_iterations": 10**9,
            "pool": {**cfg.model.get("pool", {}), "cache_dir": str(run_dir / "pool")},
        }
        write_json(run_dir / "settings.json", {"mode": mode, "seed": seed, "model": settings, "data": cfg.data})
        clock = StudyClock(run_dir, study["checkpoints"], study["ckpt_minutes"] * 60, parent_pid, study["clock"])
        interrupt = CheckpointOnInterrupt(dirpath=str(run_dir), filename="interrupted.ckpt")
        resume_from = None  # the newest checkpoint that loads (a kill may have cut one short)
        for path in sorted(
            (p for p in (run_dir / "interrupted.ckpt", run_dir / "last.ckpt") if p.exists()),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        ):
            with contextlib.suppress(LightningDDError):
                check_checkpoint(str(path))
                resume_from = str(path)
                break
        print(f"{mode} seed {seed}: {'resuming from ' + resume_from if resume_from else 'starting'}", flush=True)
        trainer(study["device"], callbacks=[clock, interrupt], profiler=clock.parts).fit(
            DistillModule(**settings), datamodule=cfg.datamodule, ckpt_path=resume_from
        )
        if interrupt.signal_received is not None or clock.stopped_for:
            return {**outcome, "status": "interrupted", "why": clock.stopped_for or "signal"}
        write_json(run_dir / "progress.json", {**read_json(run_dir / "progress.json", {"snapshots": {}}), "done": True})
        for path in (run_dir / "last.ckpt", run_dir / "interrupted.ckpt"):
            path.unlink(missing_ok=True)  # done: the snapshots are what the study keeps
        return {**outcome, "status": "done"}
    except Exception as err:  # a failed run must not stop the others
        traceback.print_exc()
        return {**outcome, "status": "failed", "why": f"{type(err).__name__}: {err}"}


def eval_settings(cfg, net=None, epochs: int | None = None) -> dict:
    """What defines an evaluation (its digest names the folder of results)."""
    return {
        "schedule": {**asdict(cfg.schedule), **({} if epochs is None else {"epochs": epochs})},
        "net": asdict(net or cfg.eval_net or cfg.net),
        "dataset": cfg.datamodule.info.name,
    }


def evaluate_task(task: tuple) -> dict:
    """Train one network (seed ``repeat``), its result written at once: a killed study loses only the networks in training."""
    study, kind, key, source, repeat, settings, out = task
    cfg = study_config(study["config"], None, study["threads"], tuple(study["overrides"]))
    schedule = TrainSchedule(**{**settings["schedule"], "milestones": tuple(settings["schedule"]["milestones"])})
    net, dm, device = (
        NetSpec(**settings["net"]),
        cfg.datamodule,
        settings.get("device", study["device"]),
    )  # the paper protocol may run elsewhere
    started, val = now(), dm.val_data
    if kind == "snapshot":
        snap = torch.load(source, map_location="cpu", weights_only=True)
        row = evaluation.evaluate_repeats(
            key,
            snap["decoded"],
            snap["labels"],
            dm.test_data,
            net,
            schedule,
            1,
            repeat,
            device,
            progress=False,
            val=val,
        )
    elif kind == "random":
        row = evaluation.evaluate_random_subsets(
            cfg.model["ipc"], dm.train_data, dm.test_data, net, schedule, 1, repeat, device, progress=False, val=val
        )
    else:  # the full training set
        row = evaluation.evaluate_full_set(
            dm.train_data, dm.test_data, net, schedule, schedule.epochs, 1, repeat, device, progress=False, val=val
        )
    wall, cpu = now()
    acc = row.accuracies[0]
    result = {
        "key": key,
        "repeat": repeat,
        "accuracy": acc,
        "device": device,
        "wall_s": wall - started[0],
        "cpu_s": cpu - started[1],
    }
    if row.val_accuracies:
        result["val_accuracy"] = row.val_accuracies[0]
    write_json(Path(out), result)
    print(f"  evaluated {key} net {repeat}: {acc:.2f} % ({result['wall_s']:.0f} s)", flush=True)
    return result


def scored(folder: Path, repeats: int) -> dict:
    """The evaluated networks in ``folder``: accuracies (also by network seed), their mean and std (None before any) and training time."""
    results = {
        k: r for k in range(repeats) if (r := read_json(folder / f"{k}.json")) is not None
    }  # by network seed: workers finish out of order
    accs = [r["accuracy"] for r in results.values()]
    mean, std = mean_std(accs) if accs else (None, None)
    vals = [r["val_accuracy"] for r in results.values() if "val_accuracy" in r]
    val_mean = mean_std(vals)[0] if vals and len(vals) == len(accs) else None
    return {
        "accuracies": accs,
        "by_net": dict(zip(results, accs)),
        "acc_mean": mean,
        "acc_std": std,
        "val_mean": val_mean,
        "eval_wall_s": sum(r["wall_s"] for r in results.values()),
    }


def chosen_on_validation(finals: list[dict]) -> dict | None:
    """The final set to evaluate by the paper's protocol: the highest validation accuracy, never the highest test accuracy (None without validation scores)."""
    return max((r for r in finals if r.get("val_mean") is not None), key=lambda r: r["val_mean"], default=None)


def time_to_reach(curve: list[tuple[float, float]], target: float) -> float | None:
    """First time a piecewise-linear accuracy curve (sorted by time) reaches ``target``."""
    hit = next((k for k, (_, acc) in enumerate(curve) if acc >= target), None)
    if not hit:  # never, or at the first point
        return None if hit is None else curve[0][0]
    (t0, a0), (t1, a1) = curve[hit - 1], curve[hit]
    return t0 + (t1 - t0) * (target - a0) / (a1 - a0)


def interpolate(curve: list[tuple[float, float]], t: float) -> float:
    """Piecewise-linear value of a curve (sorted by time) at ``t`` inside its time range."""
    for (t0, a0), (t1, a1) in zip(curve, curve[1:] or curve):  # a single point pairs with itself
        if t0 <= t <= t1:
            return a0 if t1 == t0 else a0 + (a1 - a0) * (t - t0) / (t1 - t0)
    raise ValueError(f"{t} is outside the curve's time range")


def speedups(reference: list[tuple[float, float]], candidate: list[tuple[float, float]]) -> list[dict]:
    """Per level of the reference curve after its first point, when each curve reaches it and reference / candidate time."""
    times = [(level, time_to_reach(reference, level), time_to_reach(candidate, level)) for _, level in reference[1:]]
    return [
        {
            "level": level,
            "reference_s": ref,
            "candidate_s": cand,
            "speedup": None if cand is None or cand <= 0 else ref / cand,
        }
        for level, ref, cand in times
    ]


def differences(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """``(time, a - b)`` at every point of either curve in their common time range (it starts and ends at one), both linear between these; [] when none."""
    if not a or not b or (start := max(a[0][0], b[0][0])) >= (end := min(a[-1][0], b[-1][0])):
        return []
    return [(t, interpolate(a, t) - interpolate(b, t)) for t in sorted({t for t, _ in a + b if start <= t <= end})]


def crossings(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> list[dict]:
    """Where two piecewise-linear curves cross in their common time range: ``{"time", "accuracy", "ahead_after": "a" or "b"}``."""
    grid, found = differences(a, b), []
    apart = [(k, t, d) for k, (t, d) in enumerate(grid) if d != 0]  # the grid points where they differ
    for (k0, t0, d0), (k1, t1, d1) in zip(apart, apart[1:]):
        if (d0 > 0) != (d1 > 0):  # they cross here, at the first of any ties between
            tc = grid[k0 + 1][0] if k1 > k0 + 1 else t0 + (t1 - t0) * d0 / (d0 - d1)
            found.append({"time": tc, "accuracy": interpolate(a, tc), "ahead_after": "a" if d1 > 0 else "b"})
    return found


def format_seconds(seconds: float | None) -> str:
    return (
        "-"
        if seconds is None
        else f"{seconds:.2g} s"
        if seconds < 10
        else f"{seconds:.0f} s"
        if seconds < 600
        else f"{seconds / 60:.1f} min"
        if seconds < 7200
        else f"{seconds / 3600:.2f} h"
    )


def summarise(study_dir: Path, settings_key: str, repeats: int) -> dict:
    """Every run's snapshots with their evaluations as rows (by mode, seed and snapshot) and the per-mode curves."""
    runs = [
        (m, d, read_json(d / "progress.json", {"snapshots": {}}))
        for m in STUDY_MODES
        for d in sorted((study_dir / "runs" / m).glob("seed*"), key=lambda p: int(p.name[4:]))
    ]
    rows = [{**record, "mode": m, "seed": int(d.name[4:]), "done": bool(progress.get("done")), **scored(study_dir / "evals" / settings_key / record["digest"], repeats)}
            for m, d, progress in runs for record in sorted(progress["snapshots"].values(), key=lambda r: r["index"])]  # fmt: skip
    return {"rows": rows, "modes": curve_points(rows)}


def curve_points(rows: list[dict]) -> dict:
    """Per mode, its seeds and points (the tables' and the figure's): each checkpoint every seed has evaluated, means over seeds (also per network seed)."""
    modes = {}
    for mode in dict.fromkeys(r["mode"] for r in rows):
        mine = [r for r in rows if r["mode"] == mode and r["acc_mean"] is not None]
        seeds, points = sorted({r["seed"] for r in mine}), []
        for index in sorted({r["index"] for r in mine}):
            if len(at := [r for r in mine if r["index"] == index]) == len(seeds):
                mean, spread = mean_std([r["acc_mean"] for r in at])
                times = {k: mean_std([r[k] for r in at])[0] for k in ("wall_s", "cpu_s", "steps")}
                shared = set.intersection(
                    *(set(r.get("by_net", ())) for r in at)
                )  # network seeds evaluated at every seed's snapshot (rows read from a CSV have none)
                nets = {
                    k: mean_std([r["by_net"][k] for r in at])[0] for k in sorted(shared)
                }  # network seed -> its accuracy, mean over seeds
                points.append(
                    {
                        "index": index,
                        "nominal_s": at[0]["nominal_s"],
                        **times,
                        "mean": mean,
                        "std": spread if len(at) > 1 else at[0]["acc_std"],
                        "seeds": len(at),
                        "nets": nets,
                    }
                )
        modes[mode] = {"seeds": seeds, "points": points}
    return modes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--config", required=True, help="config whose data, model and evaluation sections are used")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="change one config value for every mode (repeatable), e.g. model.lr_img=0.02",
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["accdd", "idc"],
        choices=list(STUDY_MODES),
        help="modes to distil (default: accdd idc)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0],
        help="distillation seeds (default 0); more seeds can be appended later",
    )
    parser.add_argument(
        "--budget_minutes",
        type=float,
        default=30.0,
        help="minutes of --clock per run of distillation, pool pretraining included",
    )
    parser.add_argument(
        "--clock",
        choices=tuple(CLOCKS),
        default="wall",
        help="what the budget counts: wall-clock, or each run's CPU time (other load on the machine then slows a study without distorting it)",
    )
    parser.add_argument("--first_checkpoint", type=float, default=30.0, help="first snapshot, in seconds of the clock")
    parser.add_argument("--per_doubling", type=int, default=1, help="snapshots per doubling of the clock")
    parser.add_argument(
        "--ckpt_minutes", type=float, default=5.0, help="also checkpoint a run this often (besides at every snapshot)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per run (two 1-thread runs share 2 cores)"
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs (and evaluation networks) in parallel, as separate processes"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="evaluation networks per snapshot, also random-real draws (default: the config's evaluation.repeats, else 3)",
    )
    parser.add_argument(
        "--eval_epochs", type=int, default=None, help="evaluation epochs (default: the config's evaluation.epochs)"
    )
    parser.add_argument(
        "--full_epochs",
        type=int,
        default=None,
        help="epochs of the full-training-set row (default: the config's evaluation.full_set_epochs when above 0, else 2; 0 skips the row)",
    )
    parser.add_argument(
        "--paper_epochs",
        type=int,
        default=0,
        help="also evaluate the best final set by the paper's protocol (ConvNet-3, --paper_width) for this many epochs (0: skip)",
    )
    parser.add_argument("--paper_repeats", type=int, default=3, help="networks of that evaluation")
    parser.add_argument(
        "--paper_width",
        type=int,
        default=PAPER_WIDTH,
        help=f"ConvNet-3 width of that evaluation (the paper's: {PAPER_WIDTH}; other widths separate its effect from the epochs')",
    )
    parser.add_argument(
        "--paper_device",
        choices=("cpu", "cuda"),
        default=None,
        help="where the paper-protocol networks train (default --device): it is outside the clock, and 1000 epochs at width 128 cost about 80 CPU-minutes per network",
    )
    parser.add_argument(
        "--phase",
        choices=("all", "distil", "evaluate", "report"),
        default="all",
        help="distil, evaluate snapshots, write results; all = the three in turn",
    )
    parser.add_argument(
        "--name",
        default=None,
        help="study name (default <dataset>-ipc<ipc>): names the study folder and the result files",
    )
    parser.add_argument("--study_dir", default=None, help="study folder (default lightning_logs/curves/<name>)")
    parser.add_argument("--results_dir", default="docs/curves", help="where the CSV, Markdown and PNG go")
    parser.add_argument("--output", default="docs/benchmarks.md", help="document that receives the results section")
    parser.add_argument(
        "--note", default="", help="a sentence printed under the study's title (e.g. what else ran on the machine)"
    )
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.threads < 1 or args.budget_minutes <= 0 or (args.repeats is not None and args.repeats < 1):
        parser.error("need --jobs >= 1, --threads >= 1, --budget_minutes > 0 and --repeats >= 1")
    return args


def open_study(args: argparse.Namespace) -> dict:
    """Create or reopen the study folder; a reopened study must have the same distillation settings."""
    raw = apply_overrides(yaml.safe_load(Path(args.config).read_text()), args.override)
    name = args.name or f"{raw.get('data', {}).get('dataset', 'digits')}-ipc{raw['model']['ipc']}"
    study_dir = Path(args.study_dir or ROOT / "lightning_logs" / "curves" / name)
    budget = args.budget_minutes * 60  # the clock depends on the thread count too: one study, one thread count
    signature = {
        "model": raw["model"],
        "data": raw.get("data", {}),
        "budget_s": budget,
        "checkpoints": checkpoint_schedule(args.first_checkpoint, budget, args.per_doubling),
        "device": args.device,
        "threads": args.threads,
        **({"clock": args.clock} if args.clock != "wall" else {}),
    }  # studies before --clock counted wall-clock
    recorded = read_json(study_dir / "study.json")
    if recorded is None:
        write_json(
            study_dir / "study.json", {"signature": signature, "config": args.config, "overrides": args.override}
        )
    elif recorded["signature"] != signature:
        changed = sorted(k for k in signature if signature[k] != recorded["signature"].get(k))
        raise ConfigError(
            f"study folder {study_dir} was distilled with other settings ({', '.join(changed)} differ); rerun with the same config, overrides, budget, checkpoints and threads, or pick another --name"
        )
    return {
        "clock": "wall",
        **signature,
        "dir": str(study_dir),
        "name": name,
        "config": args.config,
        "overrides": args.override,
        "ckpt_minutes": args.ckpt_minutes,
        "note": args.note,
    }


def distil_phase(study: dict, args: argparse.Namespace) -> list[dict]:
    runs = [(m, s) for s in args.seeds for m in args.modes]
    done = [
        (m, s)
        for m, s in runs
        if read_json(Path(study["dir"]) / "runs" / m / f"seed{s}" / "progress.json", {}).get("done")
    ]
    for m, s in done:
        print(f"{m} seed {s}: done earlier, skipped", flush=True)
    pending = [run for run in runs if run not in done]
    parent = os.getpid() if args.jobs > 1 and len(pending) > 1 else None
    outcomes = list(
        parallel_map(
            distil_run,
            [(study, m, s, parent) for m, s in pending],
            args.jobs,
            initializer=torch.set_num_threads,
            initargs=(args.threads,),
        )
    )
    for outcome in outcomes:
        print(
            f"{outcome['mode']} seed {outcome['seed']}: {outcome['status']}{' (' + outcome['why'] + ')' if 'why' in outcome else ''}",
            flush=True,
        )
    return outcomes


def evaluation_plan(study: dict, cfg, args: argparse.Namespace, repeats: int) -> tuple[dict, dict, list[tuple]]:
    """The evaluation settings (curve, full set, paper protocol), their digests and the networks still to train."""
    study_dir, tasks = (
        Path(study["dir"]),
        {},
    )  # result file -> task: identical sets (e.g. every mode's start) are evaluated once

    def want(kind: str, key: str, source: str | None, settings: dict, count: int) -> None:
        folder = study_dir / "evals" / digest(settings)
        write_json(folder / "settings.json", settings)
        outs = [str(folder / key / f"{r}.json") for r in range(count)]
        tasks.update(
            {
                out: (study, kind, key, source, r, settings, out)
                for r, out in enumerate(outs)
                if out not in tasks and not Path(out).exists()
            }
        )

    curve = eval_settings(cfg)
    for seed_dir in sorted((study_dir / "runs").glob("*/seed*")):
        for record in read_json(seed_dir / "progress.json", {"snapshots": {}})["snapshots"].values():
            want("snapshot", record["digest"], str(seed_dir / record["file"]), curve, repeats)
    want("random", f"random-real-ipc{cfg.model['ipc']}", None, curve, repeats)
    full_epochs = args.full_epochs if args.full_epochs is not None else (cfg.evaluation.get("full_set_epochs") or 2)
    if full := eval_settings(cfg, epochs=full_epochs) if full_epochs > 0 else None:
        want("full", "full-training-set", None, full, repeats)
    # The paper protocol: the finished run whose final snapshot scored highest on the validation split (rows are in snapshot order).
    finals = (
        {
            (r["mode"], r["seed"]): r
            for r in summarise(study_dir, digest(curve), repeats)["rows"]
            if r["done"] and r["acc_mean"] is not None
        }
        if args.paper_epochs > 0
        else {}
    )
    paper = None
    if finals and not any(r.get("val_mean") is not None for r in finals.values()):
        print(
            "paper protocol: the config holds no validation split (data.val_per_class), so no final set is chosen; nothing is chosen on test",
            flush=True,
        )
    if best := chosen_on_validation(list(finals.values())):
        net = NetSpec(**{**asdict(cfg.net), "name": "convnet", "depth": 3, "width": args.paper_width})
        paper = {
            **eval_settings(cfg, net=net, epochs=args.paper_epochs),
            "device": args.paper_device or study["device"],
            "chosen": {k: best[k] for k in ("mode", "seed", "digest")},
        }
        want(
            "snapshot",
            best["digest"],
            str(study_dir / "runs" / best["mode"] / f"seed{best['seed']}" / best["file"]),
            paper,
            args.paper_repeats,
        )
    elif args.paper_epochs > 0:
        print("paper protocol: no finished, evaluated run yet; evaluate the curve first", flush=True)
    settings = {"curve": curve, "full": full, "paper": paper}
    return settings, {k: s and digest(s) for k, s in settings.items()}, list(tasks.values())


def net_name(net: dict) -> str:
    return f"{'ConvNet' if net['name'] == 'convnet' else 'ResNet-AP'}-{net['depth']} width {net['width']}"


def csv_row(columns: dict, settings: dict, row: dict) -> dict:
    """A CSV row: ``columns``, then the row's seconds, accuracies and evaluation settings, the numbers as the tables print them."""
    numbers = {k: "" if row[k] is None else f"{row[k]:.2f}" for k in ("acc_mean", "acc_std")} | {
        k: f"{row[k]:.1f}" for k in CSV_FIELDS if k.endswith("_s") and k in row
    }
    evaluation = {
        "eval_net": net_name(settings["net"]),
        "eval_epochs": settings["schedule"]["epochs"],
        "nets": len(row["accuracies"]),
        "accuracies": ";".join(f"{a:.2f}" for a in row["accuracies"]),
    }
    return {**columns, **numbers, **evaluation}


def write_outputs(
    study: dict,
    cfg,
    settings: dict,
    keys: dict,
    repeats: int,
    paper_repeats: int,
    argv: list[str] | None,
    results_dir: Path,
    output: Path | None,
) -> dict:
    """CSV, Markdown and PNG for the study, and its section of the benchmarks document."""
    study_dir, name, dataset, ipc = Path(study["dir"]), study["name"], cfg.datamodule.info.name, cfg.model["ipc"]
    summary = summarise(study_dir, keys["curve"], repeats)
    chosen = (
        settings["paper"]["chosen"] if keys["paper"] else {}
    )  # reference rows once evaluated: label -> (settings, networks, CSV columns)
    specs = {"random real": ("curve", f"random-real-ipc{ipc}", repeats, {}), "full training set": ("full", "full-training-set", repeats, {}),
             f"paper protocol: {chosen.get('mode')}": ("paper", chosen.get("digest"), paper_repeats, {"seed": chosen.get("seed")})}  # fmt: skip
    refs = {
        label: (settings[k], row, columns)
        for label, (k, key, n, columns) in specs.items()
        if keys[k] and (row := scored(study_dir / "evals" / keys[k] / key, n))["accuracies"]
    }
    head = {"study": name, "dataset": dataset, "ipc": ipc, "clock": study["clock"]}
    rows = [
        csv_row(
            {
                **head,
                "mode": r["mode"],
                "seed": r["seed"],
                "checkpoint": r["index"],
                "steps": r["steps"],
                "outer": r["outer"],
            },
            settings["curve"],
            r,
        )
        for r in summary["rows"]
    ]
    rows += [csv_row({**head, "mode": label, **columns}, s, row) for label, (s, row, columns) in refs.items()]
    with atomic_open(results_dir / f"{name}.csv", "w") as handle:
        csv.writer(handle).writerows([CSV_FIELDS, *([row.get(k, "") for k in CSV_FIELDS] for row in rows)])
    plot_csv(results_dir / f"{name}.csv")  # the figure is drawn from the rows the tables come from
    body = markdown(study, summary, refs, settings, repeats, argv, dataset, ipc)
    with atomic_open(results_dir / f"{name}.md", "w") as handle:
        handle.write(body.replace(f"](curves/{name}.png)", f"]({name}.png)") + "\n")
    if output is not None:
        write_section(output, f"curve-{name}", body)
    return summary


def speedup_sentence(accdd: list[tuple[float, float]], idc: list[tuple[float, float]]) -> str:
    """The headline: Acc-DD's time to IDC mode's best mean accuracy against IDC mode's, from (time, accuracy) curves."""
    _, best = max(idc, key=lambda p: (p[1], -p[0]))
    t_idc, t_acc = time_to_reach(idc, best), time_to_reach(accdd, best)
    if t_idc <= idc[0][0]:
        return f"**Measured speed-up: not defined yet.** IDC mode has not improved on its starting set ({best:.2f} %)."
    if t_acc is None:
        return f"**Measured speed-up: none.** Acc-DD did not reach IDC mode's best mean accuracy ({best:.2f} %, reached at {format_seconds(t_idc)}) within {format_seconds(accdd[-1][0])}; its best was {max(a for _, a in accdd):.2f} %."
    if t_acc <= 0:
        return f"**Measured speed-up: not defined.** Acc-DD's set at the start of its clock already had IDC mode's best mean accuracy ({best:.2f} %, which IDC mode reached at {format_seconds(t_idc)})."
    (idc_lo, idc_hi), (acc_lo, acc_hi) = snapshot_bracket(idc, best), snapshot_bracket(accdd, best)
    upper = f"{idc_hi / acc_lo:.2f}x" if acc_lo > 0 else "unbounded (Acc-DD's snapshot before it is at 0 s)"
    return (f"**Measured speed-up: between {idc_lo / acc_hi:.2f}x and {upper}** (straight-line interpolation between snapshots: {t_idc / t_acc:.2f}x). "
            f"Acc-DD reached IDC mode's best mean accuracy ({best:.2f} %, which IDC mode reached between {format_seconds(idc_lo)} and {format_seconds(idc_hi)}) "
            f"between {format_seconds(acc_lo)} and {format_seconds(acc_hi)}: the snapshots bracket each time, so they bracket the ratio.")  # fmt: skip


def snapshot_bracket(curve: list[tuple[float, float]], target: float) -> tuple[float, float]:
    """The times of the last snapshot below ``target`` and the first at or above it (equal when the first snapshot already reaches it)."""
    hit = next(k for k, (_, acc) in enumerate(curve) if acc >= target)
    return curve[max(hit - 1, 0)][0], curve[hit][0]


def network_speedups(accdd: list[dict], idc: list[dict], x: str) -> list[float | None]:
    """The headline speed-up on each evaluation network's own (paired) curves, to show how far one network's noise moves it; None: not defined or not reached."""
    curves = [
        [[(p[x], p["nets"][k]) for p in points] for points in (idc, accdd)]
        for k in sorted(set.intersection(*(set(p["nets"]) for p in accdd + idc)))
    ]
    return [
        max((r for r in speedups(ref, mine) if r["level"] > ref[0][1]), key=lambda r: r["level"], default={}).get(
            "speedup"
        )
        for ref, mine in curves
    ]


def crossing_sentence(accdd: list[tuple[float, float]], idc: list[tuple[float, float]]) -> str:
    """Where the two mean curves cross, or which one is ahead wherever they differ (level curves are neither ahead)."""
    if found := crossings(accdd, idc):
        return (
            "The mean curves cross "
            + "; ".join(
                f"at {format_seconds(c['time'])} ({c['accuracy']:.2f} %), {'Acc-DD' if c['ahead_after'] == 'a' else 'IDC mode'} ahead after"
                for c in found
            )
            + "."
        )
    if not (grid := differences(accdd, idc)):
        return "The curves share no time range, so they cannot cross."
    gaps = [d for _, d in grid if d != 0]
    ahead = (
        f"{'IDC mode' if gaps and gaps[0] < 0 else 'Acc-DD'} is ahead {'throughout' if len(gaps) == len(grid) else 'wherever they differ'}"
        if gaps
        else "they are level throughout"
    )
    return (
        f"The mean curves do not cross between {format_seconds(grid[0][0])} and {format_seconds(grid[-1][0])}: {ahead}."
    )


def gains_per_1000_steps(points: list[dict]) -> dict[int, str]:
    """Per snapshot index, points gained per 1 000 matching steps (and the steps) since the last snapshot given a rate; one fewer than MIN_GAIN_STEPS
    after it gets none, its interval joining the next (a handful of steps divides evaluation noise by a handful, e.g. the 1 step after Acc-DD's pool)."""
    gains, last = {}, points[0] if points else None
    for point in points[1:]:
        if (steps := point["steps"] - last["steps"]) >= MIN_GAIN_STEPS:
            gains[point["index"]], last = (
                f"{1000 * (point['mean'] - last['mean']) / steps:+.2f} ({last['steps']:.0f}-{point['steps']:.0f})",
                point,
            )
    return gains


def progress_lines(modes: dict, refs: dict, x: str) -> list[str]:
    """Where each mode's mean curve reaches random real images (time and matching steps) and the accuracy it gains per 1 000 steps between snapshots."""
    out, curves = (
        [],
        {m: [(p[x], p["mean"], p["steps"]) for p in data["points"]] for m, data in modes.items() if data["points"]},
    )
    if "random real" in refs and curves:
        bar, reached = refs["random real"][1]["acc_mean"], []
        for m, pts in curves.items():
            t = time_to_reach([(s, a) for s, a, _ in pts], bar)
            reached.append(
                f"{STUDY_MODES[m][0]} at {format_seconds(t)} ({interpolate([(s, n) for s, _, n in pts], t):.0f} steps)"
                if t is not None
                else f"{STUDY_MODES[m][0]} not within {format_seconds(pts[-1][0])}"
            )
        out += [f"Random real images ({bar:.2f} %) reached by the mean curve: " + "; ".join(reached) + ".", ""]
    gains = {m: gains_per_1000_steps(data["points"]) for m, data in modes.items()}
    nominal = {p["index"]: p["nominal_s"] for data in modes.values() for p in data["points"]}
    if rows := [
        [format_seconds(nominal[i]), *(gains[m].get(i, "-") for m in modes)]
        for i in sorted({i for g in gains.values() for i in g})
    ]:
        out += [
            md_table(
                ["checkpoint", *(f"{STUDY_MODES[m][0]}: points gained per 1 000 steps (steps)" for m in modes)], rows
            ),
            "",
        ]
    return out


def markdown(study: dict, summary: dict, refs: dict, settings: dict, repeats: int, argv, dataset: str, ipc: int) -> str:
    """The study's section: the curve table, references, the measured speed-up, where the time went, how it was measured."""
    name, curve, modes, published = (
        study["name"],
        settings["curve"],
        list(summary["modes"]),
        PUBLISHED.get((dataset, ipc), {}),
    )
    clock, x = CLOCKS[study["clock"]], f"{study['clock']}_s"  # the clock's name and the rows' field of its seconds
    out = [
        f"## Accuracy vs {clock}: {dataset}, IPC {ipc} (study `{name}`)",
        "",
        *([study["note"], ""] if study.get("note") else []),
        f"![accuracy vs {clock}](curves/{name}.png)",
        "",
    ]
    points = {
        m: {p["index"]: p for p in summary["modes"][m]["points"]} for m in modes
    }  # the curve table: a row per checkpoint, a column per mode
    nominal = {
        i: p["nominal_s"] for m in reversed(modes) for i, p in points[m].items()
    }  # as the first mode with the point has it
    table = [
        ["start" if i == 0 else format_seconds(nominal[i])]
        + [
            f"{p['mean']:.2f} +- {p['std']:.2f} ({p['steps']:.0f}, {p[x]:.0f} s)" if (p := points[m].get(i)) else "-"
            for m in modes
        ]
        for i in sorted(nominal)
    ]
    out += [md_table(["checkpoint", *(f"{STUDY_MODES[m][0]}: acc % (steps, s)" for m in modes)], table), ""]
    count = lambda n, what: f"{n} {what}{'s' if n != 1 else ''}"  # noqa: E731
    label = lambda k, s: (
        f"{k} ({count(s['schedule']['epochs'], 'epoch')})" if k == "full training set" else k
    )  # the full set has its own, short schedule
    ref_text = [
        f"{label(k, s)}: {v['acc_mean']:.2f} +- {v['acc_std']:.2f} % ({count(len(v['accuracies']), 'net')})"
        for k, (s, v, _) in refs.items()
        if not k.startswith("paper protocol")
    ]
    ref_text += ["published: " + ", ".join(f"{k} {v:.1f} %" for k, v in published.items())] if published else []
    out += ["References: " + "; ".join(ref_text) + ".", ""] if ref_text else []
    out += progress_lines(summary["modes"], refs, x)
    accdd, idc = ([(p[x], p["mean"]) for p in summary["modes"].get(m, {}).get("points", [])] for m in ("accdd", "idc"))
    if (
        accdd and idc
    ):  # the measured speed-up: when Acc-DD reached IDC mode's best mean accuracy and each level IDC mode reached; where the curves cross
        setup = {m: mean_std([r[f"setup_{x}"] for r in summary["rows"] if r["mode"] == m])[0] for m in ("accdd", "idc")}
        warm = [
            (t - setup["accdd"] + setup["idc"], a) for t, a in accdd
        ]  # the pool already cached (a second IPC on the same data): Acc-DD's clock less its pool pretraining
        reach = lambda r, last: [
            "not reached" if r["candidate_s"] is None else format_seconds(r["candidate_s"]),  # noqa: E731
            f"{r['speedup']:.2f}x"
            if r["speedup"] is not None
            else "- (reached at the start)"
            if r["candidate_s"] is not None
            else f"< {r['reference_s'] / last:.2f}x (not reached)",
        ]
        speeds = [
            [f"{r['level']:.2f}", format_seconds(r["reference_s"]), *reach(r, accdd[-1][0]), *reach(w, warm[-1][0])]
            for r, w in zip(speedups(idc, accdd), speedups(idc, warm))
        ]
        per_net = network_speedups(
            *(summary["modes"][m]["points"] for m in ("accdd", "idc")), x
        )  # with one network, its curve is the mean curve
        out += [
            speedup_sentence(accdd, idc)
            + (
                f" On each evaluation network's own curves (paired network seeds): {', '.join('-' if v is None else f'{v:.2f}x' for v in per_net)}."
                if len(per_net) > 1
                else ""
            ),
            "",
            md_table(
                [
                    "IDC mode accuracy (%)",
                    "IDC mode reaches it at",
                    "Acc-DD reaches it at",
                    "speed-up",
                    "pool cached: Acc-DD at",
                    "speed-up",
                ],
                speeds,
                right=6,
            ),
            "",
            f"Pool cached: Acc-DD's times less its pool pretraining ({format_seconds(setup['accdd'] - setup['idc'])}: its setup minus IDC mode's), as for a second IPC distilled on the same data and network.",
            "",
            crossing_sentence(accdd, idc),
            "",
        ]
    timing, finals = (
        [],
        {(r["mode"], r["seed"]): r for r in summary["rows"]}.values(),
    )  # where the time went: means over the runs' last snapshots
    for m in modes:
        final = [r for r in finals if r["mode"] == m]
        wall, cpu, setup, matching, network = (
            mean_std([r[k] for r in final])[0] for k in ("wall_s", "cpu_s", "setup_wall_s", "matching_s", "network_s")
        )
        evals = sum(r["eval_wall_s"] for r in summary["rows"] if r["mode"] == m)
        timing.append(
            [
                STUDY_MODES[m][0],
                len(final),
                *(f"{v:.0f}" for v in (setup, matching, network, wall - setup - matching - network)),
                f"{cpu / max(wall, 1e-9):.2f}",
                f"{evals:.0f}",
            ]
        )
    out += [
        md_table(
            [
                "mode",
                "seeds",
                "setup incl. pool (wall s)",
                "matching (wall s)",
                "network update (wall s)",
                "other (wall s)",
                "CPU s / wall s",
                "evaluation (wall s, outside the clock)",
            ],
            timing,
            right=7,
        ),
        "",
    ]
    if paper := next((v for k, (_, v, _) in refs.items() if k.startswith("paper protocol")), None):
        chosen, s = settings["paper"]["chosen"], settings["paper"]
        label = (
            "Paper protocol"
            if (s["net"]["width"], s["schedule"]["epochs"]) == (PAPER_WIDTH, PAPER_EPOCHS)
            else "Evaluation off the paper's width and epochs"
        )
        out += [
            f"{label}: the best final set ({STUDY_MODES[chosen['mode']][0]}, seed {chosen['seed']}, chosen on validation accuracy) trained on {net_name(s['net'])} for {s['schedule']['epochs']} epochs ({'on the GPU' if s.get('device') == 'cuda' else 'on the CPU'}): {paper['acc_mean']:.2f} +- {paper['acc_std']:.2f} % ({count(len(paper['accuracies']), 'net')}).",
            "",
        ]
    schedule = curve["schedule"]
    notes = [
        f"Each run distils for {format_seconds(study['budget_s'])} of {clock} ({study['threads']} thread(s) per run), measured from the start of fit, so pool pretraining is on Acc-DD's clock (and on the pool ablation's; each run pretrains its own pool: the setup column); snapshot and checkpoint writes are off the clock.",
        f"Snapshots at {', '.join(format_seconds(t) for t in study['checkpoints'])} (log-spaced; a snapshot is taken at the first step boundary after its checkpoint, and checkpoints passed during pool pretraining share the first snapshot after it); x is the mean over seeds of the actual time.",
        f"Evaluation, outside the clock and the same for every mode and checkpoint (the config's evaluation section, as `lightning-dd fit` evaluates it, so that the curves differ only in the sets): fresh {net_name(curve['net'])} networks, {schedule['epochs']} epochs, SGD lr {schedule['lr']}, batch {schedule['batch_size']}, DSA ({schedule['augment']}) + CutMix p {schedule['cutmix_p']}, final-epoch test accuracy; {repeats} networks per snapshot with the same network seeds for every snapshot (paired). "
        "Cell: mean over seeds of the per-seed mean, +- the std across seeds (across the networks when there is one seed); steps are matching steps (inner iterations).",
        "Speed-up: curves are piecewise linear in time between checkpoints; for each accuracy IDC mode reaches, the time at which each curve first reaches it. "
        f"Points gained per 1 000 steps: since the mode's previous snapshot with a rate (or its start); a snapshot fewer than {MIN_GAIN_STEPS} steps after that one has none, and its interval joins the next.",
    ]
    if over := [
        STUDY_MODES[m][0]
        for m in modes
        if any(r["mode"] == m and r["index"] == 0 and r[f"setup_{x}"] > study["budget_s"] for r in summary["rows"])
    ]:
        notes.append(
            f"Setup (pool pretraining) alone took longer than the budget for {', '.join(over)}: such a run takes one matching step and its last snapshot, so its curve starts after the budget."
        )
    if unfinished := sorted({(r["mode"], r["seed"]) for r in summary["rows"] if not r["done"]}):
        notes.append(
            "Unfinished runs (rerun the command to continue): "
            + ", ".join(f"{m} seed {s}" for m, s in unfinished)
            + "."
        )
    if pending := [r for r in summary["rows"] if r["acc_mean"] is None]:
        notes.append(f"{len(pending)} snapshot(s) not evaluated yet (rerun with --phase evaluate).")
    return "\n".join(out + [" ".join(notes), "", provenance("curve", argv, study["threads"], study["device"])])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        study = open_study(args)
        failed = (
            [o for o in distil_phase(study, args) if o["status"] != "done"] if args.phase in ("all", "distil") else []
        )
        cfg = load_config(args.config, args.eval_epochs, args.threads, args.override)
        repeats = args.repeats or int(cfg.evaluation.get("repeats", 3))
        settings, keys, tasks = evaluation_plan(study, cfg, args, repeats)
        if args.phase in ("all", "evaluate"):
            print(f"evaluating: {len(tasks)} network(s) to train", flush=True)
            list(
                parallel_map(
                    evaluate_task, tasks, args.jobs, initializer=torch.set_num_threads, initargs=(args.threads,)
                )
            )
            if args.paper_epochs > 0 and settings["paper"] is None:
                settings, keys, tasks = evaluation_plan(
                    study, cfg, args, repeats
                )  # the curve is now evaluated: pick the best set
                list(
                    parallel_map(
                        evaluate_task, tasks, args.jobs, initializer=torch.set_num_threads, initargs=(args.threads,)
                    )
                )
        if args.phase != "distil":
            out = write_outputs(
                study,
                cfg,
                settings,
                keys,
                repeats,
                args.paper_repeats,
                argv,
                Path(args.results_dir),
                Path(args.output) if args.output else None,
            )
            for mode, data in out["modes"].items():
                print(
                    f"{STUDY_MODES[mode][0]}: "
                    + ", ".join(f"{p['mean']:.1f}% at {p[study['clock'] + '_s']:.0f}s" for p in data["points"]),
                    flush=True,
                )
            print(f"results: {Path(args.results_dir) / study['name']}.{{csv,md,png}}", flush=True)
        if failed:
            raise SystemExit(
                f"{len(failed)} run(s) did not finish: "
                + "; ".join(f"{o['mode']} seed {o['seed']}: {o['status']} ({o.get('why', '')})" for o in failed)
                + "; rerun the same command to continue"
            )
    except LightningDDError as err:
        raise SystemExit(f"curve.py: error: {err}") from None


if __name__ == "__main__":
    main()
