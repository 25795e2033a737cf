"""Throughput of one distillation inner iteration (all classes matched + the network's update): DistillModule vs a plain loop.

``reference`` (:mod:`benchmarks.reference_loop`, the authors' per-class loop in plain PyTorch) and ``library`` (``DistillModule`` under a Trainer, one row per precision) run the same seeded
workload, each in a fresh process so its peak memory is its own; both must compute the same matching loss and image gradient. Writes the ``throughput`` section of ``--output`` and ends with
``speed-up vs reference: <smallest ratio over the shapes, best mode>x``::

    python -m benchmarks.throughput [--device cuda] [--precision 32,bf16] [--quick --shapes 8x8x1 --output /tmp/bench.md]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

import lightning as L
import torch
from torch.utils.flop_counter import FlopCounterMode

from lightning_dd.utils.allocator import tune_cpu_allocator
from lightning_dd.data import ImageSplit, Normalizer, RealData, RealDataModule, load_source, register_source
from lightning_dd.data.sources import make_dataset
from lightning_dd.distill import DSA, DistillModule, SyntheticSet, class_matching_loss
from lightning_dd.distill.functional_net import FunctionalNet
from lightning_dd.distill.grouped import GroupedConvNet, default_classes_per_pass, grouped_matching_loss
from lightning_dd.distill.matching import matched_parameter_names
from lightning_dd.utils.hardware import cpu_bf16_units
from lightning_dd.nets import NetSpec, head_parameter_names

from . import reference_loop, report
from .parts import PartSeconds
from .report import ROOT, command, machine_line, md_table
from .runner import parallel_map, trainer

MARKER = "throughput"
LOSS_TOLERANCE, GRAD_TOLERANCE = 1e-4, 1e-3
BF16_LOSS_TOLERANCE = 1e-2  # bf16 autocast: the matching loss within 1 % of fp32
N_TRAIN, N_TEST = 6000, 100
FULL = reference_loop.Settings()  # ConvNet-3 w128, 10 classes, batch_real 64, IPC 10 x factor 2, n_data 500, batch 128
QUICK = replace(FULL, width=16, ipc=2, n_data=64)
PATH_LABELS = {"reference": "reference", "reference_tuned": "reference + tuned allocator"}


def parse_shape(text: str) -> tuple[int, int, int]:
    """``"32x32x3"`` -> (H, W, C)."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"shape must look like HxWxC with positive sides (e.g. 32x32x3), got {text!r}")
    return tuple(int(p) for p in parts)


def parse_precisions(text: str) -> list[str]:
    """``"auto"`` (kept for main to resolve), or a comma-separated subset of ``32,bf16``."""
    values = [p.strip() for p in text.split(",") if p.strip()]
    if text != "auto" and (not values or any(p not in ("32", "bf16") for p in values)):
        raise argparse.ArgumentTypeError(
            f"--precision must be auto or a comma-separated subset of 32,bf16; got {text!r}"
        )
    return list(dict.fromkeys(values))


def fast_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively (CUDA with bf16 support; a CPU with AVX512-BF16 or AMX)."""
    return torch.cuda.is_bf16_supported() if device.type == "cuda" else bool(cpu_bf16_units())


def mode_name(precision: str) -> str:
    return "bf16" if precision == "bf16" else "fp32"


def register_random_source(shape: tuple[int, int, int], settings: reference_loop.Settings) -> str:
    """Register an in-memory dataset of random uint8 images with balanced labels; returns its source name."""
    (h, w, c), name = shape, "benchmark_random_" + "x".join(map(str, shape))

    @register_source(name)
    def load(data_dir: str = "data", download: bool = False):
        images, labels = reference_loop.random_images(N_TRAIN + N_TEST, c, h, w, settings.num_classes, settings.seed)
        train, test = ImageSplit(images[:N_TRAIN], labels[:N_TRAIN]), ImageSplit(images[N_TRAIN:], labels[N_TRAIN:])
        return make_dataset(name, train, test, [str(k) for k in range(settings.num_classes)], flip_ok=True)

    return name


def netspec(settings: reference_loop.Settings):
    return NetSpec(name="convnet", depth=settings.depth, width=settings.width, norm="instance", pooling="avg")


def proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith(field + ":"))


class Probe:
    """A device-synchronised clock and the peak memory of this process's workload since the probe was created."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.cuda, self.kind = device, device.type == "cuda", "torch.cuda.max_memory_allocated"
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(device)
            return
        self.kind, self.baseline_kb = "VmHWM growth over VmRSS after imports", proc_status_kb("VmRSS")
        try:  # Linux >= 4.0: reset the peak RSS to the current RSS
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.kind += " (VmHWM not resettable: includes the import peak)"

    def sync(self) -> float:  # waits for the device; returns the time
        if self.cuda:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def megabytes(self) -> float:
        return (
            torch.cuda.max_memory_allocated(self.device) / 2**20
            if self.cuda
            else max(0, proc_status_kb("VmHWM") - self.baseline_kb) / 1024
        )


def run_reference(
    probe: Probe, task: dict, s: reference_loop.Settings, device, iterations: int
) -> list[tuple[float, float]]:
    """The reference loop's inner iterations: (seconds, seconds of the matching part) of each."""
    h, w, c = task["shape"]
    distiller = reference_loop.ReferenceDistiller(
        *(t[:N_TRAIN] for t in reference_loop.random_images(N_TRAIN + N_TEST, c, h, w, s.num_classes, s.seed)),
        s,
        device,
    )
    times = []
    for _ in range(iterations):
        t0 = probe.sync()
        distiller.matching_part()
        t1 = probe.sync()
        distiller.net_update()
        times.append((probe.sync() - t0, t1 - t0))
    return times


def run_library(
    probe: Probe, task: dict, s: reference_loop.Settings, device, iterations: int
) -> list[tuple[float, float]]:
    """``DistillModule.training_step`` under a ``lightning.Trainer``: (seconds, seconds of the matching part) of each."""
    name, times = register_random_source(task["shape"], s), []
    parts = PartSeconds(
        sync_device=device
    )  # the matching part's seconds (the module's profiler actions), device-synchronised

    class StepTimer(L.Callback):
        """Wall time of every training_step (one inner iteration) and of its matching part, device-synchronised."""

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.start, self.matching = probe.sync(), parts.seconds["matching"]

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            times.append((probe.sync() - self.start, parts.seconds["matching"] - self.matching))

    shared = (
        "ipc",
        "factor",
        "batch_real",
        "augment",
        "lr_img",
        "momentum_img",
        "n_data",
        "net_lr",
        "net_momentum",
        "net_weight_decay",
        "net_batch_size",
        "seed",
    )
    module = DistillModule(
        **{k: getattr(s, k) for k in shared},
        net_cutmix_p=s.cutmix_p,
        net=netspec(s),
        init="mix",
        metric="mse",
        precision=task["precision"],
        model_source="random",
        perturb=False,  # no pool pretraining: the inner step costs the same as with pool members
        classes_per_pass=task["classes_per_pass"],
        per_class_impl=task["per_class_impl"] or "replay",
        outer_iterations=1,
        inner_loop=iterations,  # the first step (which draws the network) is a warm-up step
    )
    L.seed_everything(s.seed, verbose=False)
    trainer(device, log_every_n_steps=10, callbacks=[StepTimer()], profiler=parts).fit(
        module, datamodule=RealDataModule(name)
    )  # logs every 10 steps, as the CLI's trainer
    if len(times) != iterations:
        raise RuntimeError(f"expected {iterations} training steps, the Trainer ran {len(times)}")
    return times


def measure(task: dict) -> dict:
    """One path's run in a fresh process: its step and matching times after the warm-up, and its peak memory."""
    os.environ.setdefault("LIGHTNING_DD_QUIET", "1")
    if task["threads"] is not None:
        torch.set_num_threads(task["threads"])
    if task["path"] == "reference_tuned":  # the reference with the library's CPU allocator setting
        tune_cpu_allocator()
    device, settings, iterations = (
        torch.device(task["device"]),
        QUICK if task["quick"] else FULL,
        task["warmup"] + task["steps"],
    )
    probe = Probe(device)
    times = (run_library if task["path"] == "library" else run_reference)(probe, task, settings, device, iterations)
    return {
        "key": task["key"],
        "times": times[task["warmup"] :],
        "peak_mb": probe.megabytes(),
        "memory_kind": probe.kind,
        "threads": torch.get_num_threads(),
    }


def run_paths(shape, args) -> dict[str, dict]:
    """Medians of the pooled step and matching times of every path (``reference``, ``reference_tuned`` on the CPU,
    ``library:<precision>``), each in a fresh process, alternating ``--repeats`` times."""
    keys = (
        ["reference"]
        + (["reference_tuned"] if args.device == "cpu" else [])
        + [f"library:{p}" for p in args.precisions]
    )
    options = {
        k: getattr(args, k)
        for k in ("device", "warmup", "steps", "quick", "threads", "classes_per_pass", "per_class_impl")
    }
    tasks = [
        dict(options, key=key, path=key.partition(":")[0], precision=key.partition(":")[2] or "32", shape=shape)
        for _ in range(args.repeats)
        for key in keys
    ]
    runs: dict[str, list[dict]] = {k: [] for k in keys}
    for result in parallel_map(measure, tasks, 1, fresh=True):  # one at a time, each in a fresh process
        runs[result["key"]].append(result)
    merged = {}
    for key, results in runs.items():
        steps, matches = zip(*(t for r in results for t in r["times"]))
        merged[key] = {
            "step": statistics.median(steps),
            "match": statistics.median(matches),
            "count": len(steps),
            "peak_mb": max(r["peak_mb"] for r in results),
        }
        merged[key].update(memory_kind=results[0]["memory_kind"], threads=results[0]["threads"])
    return merged


def equality_and_flops(shape, settings, device, bf16: bool = False) -> dict:
    """Both paths' matching code on the same net, batches and DSA draws (main turns TF32 off): summed losses, relative differences
    of the loss and its image gradient (also of the grouped pass on CUDA and, with ``bf16``, under autocast) and one class-step's FLOPs."""
    s, (h, w, c), classes = settings, shape, settings.num_classes
    loaded = load_source(register_random_source(shape, s))
    info, generator = loaded.info, torch.Generator().manual_seed(s.seed + 1)
    real = (
        RealData(loaded.train, info).to(device).class_balanced_batch(s.batch_real, generator)
    )  # [C, n, ch, H, W], normalised
    stored = torch.rand(classes * s.ipc, c, h, w, generator=generator).to(device)
    dsa = DSA(s.augment, flip_ok=info.flip_ok)
    draws = dsa.sample(classes, generator)
    normalizer = Normalizer(info.mean, info.std, device)

    net = reference_loop.PlainConvNet(c, classes, (h, w), s.depth, s.width).to(device)
    net.load_state_dict(netspec(s).build_seeded(s.seed, c, classes, (h, w)).state_dict())

    def reference_class(images, k):
        return reference_loop.class_loss(
            net,
            dsa,
            real[k],
            images[k * s.ipc : (k + 1) * s.ipc],
            k,
            draws[k : k + 1],
            s.factor,
            normalizer.mean,
            normalizer.std,
        )

    template = netspec(s).build_seeded(s.seed + 12345, c, classes, (h, w))  # different init: weights come from `net`
    fnet = FunctionalNet(template).to(device)
    weights = fnet.clone_weights(net.state_dict(), device)
    names = matched_parameter_names(
        {n: p.shape for n, p in template.named_parameters()}, head_parameter_names(template)
    )
    synthetic = SyntheticSet(classes, s.ipc, c, (h, w), s.factor).to(device)
    synthetic.images.data.copy_(stored)

    def library_pair(k):
        """Class ``k``'s augmented real and synthetic batches, as DistillModule builds them."""
        both = dsa.apply(torch.cat([real[k], normalizer(synthetic.decoded_class_images(k))]), draws[k : k + 1])
        return both[: real.shape[1]], both[real.shape[1] :]

    def library_class(k):
        return class_matching_loss(lambda x: fnet(weights, x), [weights[n] for n in names], *library_pair(k), k, "mse")

    def differences(total) -> tuple[float, float]:
        """Relative differences of ``total`` and of its gradient w.r.t. the synthetic images to the reference's."""
        (grad,) = torch.autograd.grad(total, synthetic.images)
        return abs(ref_loss - total.item()) / max(abs(ref_loss), 1e-30), float(
            (ref_grad - grad).norm() / ref_grad.norm().clamp_min(1e-30)
        )

    ref_images = stored.clone().requires_grad_(True)
    ref_total = sum(reference_class(ref_images, k) for k in range(classes))
    (ref_grad,) = torch.autograd.grad(ref_total, ref_images)
    ref_loss, lib_total = ref_total.item(), sum(library_class(k) for k in range(classes))
    check = {"reference_loss": ref_loss, "library_loss": lib_total.item()}
    check["rel_diff"], check["grad_rel_diff"] = differences(lib_total)
    if device.type == "cuda":  # there the library matches all classes in one grouped pass: check that path too
        pairs = [library_pair(k) for k in range(classes)]
        stacked = [torch.stack([p[i] for p in pairs]) for i in (0, 1)]
        total = grouped_matching_loss(
            GroupedConvNet(template), weights, names, *stacked, torch.arange(classes, device=device), "mse"
        )
        check["grouped_loss"] = total.item()
        check["grouped_rel_diff"], check["grouped_grad_rel_diff"] = differences(total)
    if bf16:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            total = sum(library_class(k) for k in range(classes))
        check["bf16_rel_diff"], check["bf16_grad_rel_diff"] = differences(total)

    # FLOPs of one class-step, as each path executes it (forward, grads, double backward).
    with FlopCounterMode(display=False) as counter:
        reference_class(
            stored.clone().requires_grad_(True), 0
        ).backward()  # reference: loss.backward() reaches the net's parameters too
    check["reference_flops"] = counter.get_total_flops()
    net.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as counter:
        library_class(0).backward(
            inputs=[synthetic.images]
        )  # what DistillModule.manual_backward(loss, inputs=[images]) does
    check["library_flops"] = counter.get_total_flops()
    return check


def check_lines(name: str, check: dict) -> list[str]:
    """The loss-check line and, with bf16, the bf16 line (printed); exits when the library's loss or image gradient differs from the reference's."""
    line = (
        f"loss check {name}: reference {check['reference_loss']:.6e}, library {check['library_loss']:.6e}, "
        f"relative difference {check['rel_diff']:.2e} (< {LOSS_TOLERANCE:g}); image-gradient relative difference {check['grad_rel_diff']:.2e}"
    )
    if "grouped_loss" in check:
        line += (
            f"; grouped pass (all classes at once, the library's CUDA default): loss {check['grouped_loss']:.6e}, relative difference "
            f"{check['grouped_rel_diff']:.2e}, image-gradient relative difference {check['grouped_grad_rel_diff']:.2e}"
        )
    print(line, flush=True)
    if not all(
        check.get(p + "rel_diff", 0) < LOSS_TOLERANCE and check.get(p + "grad_rel_diff", 0) < GRAD_TOLERANCE
        for p in ("", "grouped_")
    ):
        raise SystemExit(
            f"the library's matching loss or image gradient differs from the reference's on {name}: {line}"
        )
    if "bf16_rel_diff" not in check:
        return [line]
    within = "within" if check["bf16_rel_diff"] < BF16_LOSS_TOLERANCE else "NOT within"
    bf16 = (
        f"bf16 autocast (numerics change): matching loss relative difference to the fp32 reference {check['bf16_rel_diff']:.2e} "
        f"({within} {BF16_LOSS_TOLERANCE:g}), image-gradient relative difference {check['bf16_grad_rel_diff']:.2e}; "
        "the distilled sets' accuracy is compared by `python -m benchmarks.protocol --candidate 'bf16=model.precision=bf16'`"
    )
    print(bf16, flush=True)
    return [line, bf16]


def library_label(args, device: torch.device, precision: str) -> str:
    """``library (fp32)`` / ``library (bf16)``, plus the classes per pass when it is not 1 and a chosen per-class step."""
    chunk = args.classes_per_pass or (
        1 if args.per_class_impl == "loop" else default_classes_per_pass(device.type)
    )  # the loop: one class per pass
    notes = (
        [mode_name(precision)]
        + ([f"{chunk} classes per pass"] if chunk != 1 else [])
        + ([f"per-class {args.per_class_impl}"] if args.per_class_impl is not None else [])
    )
    return f"library ({', '.join(notes)})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--device", choices=("cpu", "cuda"), default="cpu")
    add(
        "--shapes",
        type=lambda text: [parse_shape(p.strip()) for p in text.split(",")],
        default=[(28, 28, 1), (32, 32, 3)],
        help="comma-separated HxWxC (default 28x28x1,32x32x3)",
    )
    add("--steps", type=int, default=None, help="measured inner iterations per path (default 10; 2 with --quick)")
    add("--warmup", type=int, default=None, help="unmeasured inner iterations first (default 2; 1 with --quick)")
    add(
        "--repeats",
        type=int,
        default=1,
        help="fresh process runs per path, alternating reference/library; step times are pooled (default 1)",
    )
    add(
        "--quick", action="store_true", help="tiny workload (width 16, ipc 2, n_data 64, 2 measured steps) for tests/CI"
    )
    add(
        "--output",
        type=Path,
        default=ROOT / "docs" / "benchmarks.md",
        help="Markdown file whose throughput section is (re)written (default docs/benchmarks.md)",
    )
    add("--threads", type=int, default=None, help="torch.set_num_threads in every process (default: torch's choice)")
    add(
        "--precision",
        type=parse_precisions,
        default=["auto"],
        help="the library's precision modes, comma-separated (32, bf16; DistillModule(precision=...)), each its own row; "
        "default auto: 32, plus bf16 where the device computes it natively (CUDA, or a CPU with AVX512-BF16/AMX). The reference is always fp32",
    )
    add(
        "--classes_per_pass",
        type=int,
        default=None,
        help="the library's classes per matching pass (DistillModule(classes_per_pass=...)); default: the device's (10 on CUDA, 1 on the CPU)",
    )
    add(
        "--per_class_impl",
        choices=("replay", "loop"),
        default=None,
        help="how the library runs its per-class image step (DistillModule(per_class_impl=...)); default: the module's (replay)",
    )
    args = parser.parse_args(argv)
    args.steps = (2 if args.quick else 10) if args.steps is None else args.steps
    args.warmup = (1 if args.quick else 2) if args.warmup is None else args.warmup
    if min(args.steps, args.warmup, args.repeats, 1 if args.classes_per_pass is None else args.classes_per_pass) < 1:
        parser.error(
            "--steps, --warmup, --repeats and --classes_per_pass must be >= 1 (the first inner iteration also draws the network)"
        )
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = (
        False  # the checks compare in true fp32 (the paths run in their own processes)
    )
    device, s = torch.device(args.device), QUICK if args.quick else FULL
    args.precisions = (
        (["32", "bf16"] if fast_bf16(device) else ["32"]) if args.precision == ["auto"] else args.precision
    )

    synthetic = s.ipc * s.factor**2  # decoded synthetic images per class
    per_iteration = s.num_classes * (s.batch_real + synthetic)  # images through gradient matching per inner iteration
    rows, details = [], []
    ratios: dict[str, dict[str, float]] = {p: {} for p in args.precisions}  # precision -> shape -> ratio
    for shape in args.shapes:
        name = "x".join(map(str, shape))
        check = equality_and_flops(shape, s, device, bf16="bf16" in args.precisions)
        bullets = [f"**{name}**\n", *(f"- {line}" for line in check_lines(name, check))]
        results = run_paths(shape, args)
        ref, first = results["reference"], results[f"library:{args.precisions[0]}"]
        matching = [
            f"reference {ref['match']:.4f} s ({check['reference_flops'] * s.num_classes / ref['match'] / 1e9:.1f} GFLOP/s)"
        ]
        update = [f"reference {ref['step'] - ref['match']:.4f}"]
        for key, r in results.items():
            precision, ratio = key.partition(":")[2], ref["step"] / r["step"]
            label = library_label(args, device, precision) if precision else PATH_LABELS[key]
            rows.append(
                [
                    name,
                    label,
                    f"{r['step']:.4f}",
                    f"{per_iteration / r['step']:,.0f}",
                    f"{r['peak_mb']:,.0f}",
                    f"{ratio:.2f}x",
                ]
            )
            if precision:
                ratios[precision][name] = ratio
                gflops = check["library_flops"] * s.num_classes / r["match"] / 1e9
                matching.append(
                    f"library {mode_name(precision)} {r['match']:.4f} s (ratio {ref['match'] / r['match']:.2f}x; {gflops:.1f} GFLOP/s)"
                )
                update.append(f"library {mode_name(precision)} {r['step'] - r['match']:.4f}")
        bullets += [
            f"- matching part (median s per inner iteration, achieved GFLOP/s): {'; '.join(matching)}; network update (s): {', '.join(update)}",
            f"- FLOPs of one matching class-step (FlopCounterMode, forward + backward incl. double backward): "
            f"reference {check['reference_flops'] / 1e9:.3f} GFLOP, library {check['library_flops'] / 1e9:.3f} GFLOP",
            f"- measured steps: {ref['count']} per path ({args.repeats} fresh-process run(s) x {args.steps}, each after {args.warmup} warm-up); "
            f"torch threads in the workers: reference {ref['threads']}, library {first['threads']}; memory: {first['memory_kind']}",
        ]
        details.append("\n".join(bullets))
        summary = ", ".join(
            f"library {mode_name(p)} {results[f'library:{p}']['step']:.4f} s ({ratios[p][name]:.2f}x)"
            for p in args.precisions
        )
        print(f"{name}: reference {ref['step']:.4f} s, {summary} per inner iteration", flush=True)

    table = md_table(
        [
            "shape",
            "path",
            "s / inner iteration (median)",
            "images matched / s",
            "peak memory MB",
            "speed-up vs reference",
        ],
        rows,
        right=4,
    )
    smallest = {p: min(r.values()) for p, r in ratios.items()}  # per mode: its smallest ratio over the shapes
    best = max(smallest, key=smallest.get)
    modes_line = (
        "smallest ratio over the shapes per mode: "
        + ", ".join(f"{mode_name(p)} {v:.2f}x" for p, v in smallest.items())
        + f"; best mode: {mode_name(best)}"
    )
    speedup_line, cpu = f"speed-up vs reference: {smallest[best]:.2f}x", device.type == "cpu"
    workload = (
        f"Workload: ConvNet-{s.depth} width {s.width}, instance norm, {s.num_classes} classes, batch_real {s.batch_real} per class, IPC {s.ipc} x factor {s.factor} "
        f"({synthetic} decoded synthetic images per class), metric mse, augmentation {s.augment}, n_data {s.n_data} in batches of {s.net_batch_size}, {N_TRAIN} random uint8 "
        f"training images{' (--quick)' if args.quick else ''}. One inner iteration = all classes matched + one synthetic-image step + the network's update. Images matched / s = "
        f"{s.num_classes} x ({s.batch_real} real + {synthetic} synthetic) / (s per inner iteration). Reference: `benchmarks/reference_loop.py` (IDC-style per-class loop; stock-layer "
        "ConvNet with `nn.AvgPool2d`; glibc's default malloc settings). "
        + (
            "Reference + tuned allocator: the same loop after `lightning_dd.utils.allocator.tune_cpu_allocator()`, to show the share of the speed-up that the allocator setting alone gives. "
            if cpu
            else ""
        )
        + "Library: `DistillModule.training_step` under `lightning.Trainer`, timed by a Callback (its defaults: the fast 2x2 pooling of `lightning_dd.nets.pooling`; on the CPU the tuned "
        "allocator and one class per pass; on CUDA all classes in one grouped pass, `lightning_dd.distill.grouped`). The reference holds the real images as normalised float32 (as IDC's "
        "ClassMemDataLoader), the library as uint8 (normalised per batch). Each path runs in its own fresh process; peak memory is "
        + (
            "the growth of the process's peak RSS (VmHWM) over its RSS after imports."
            if cpu
            else "`torch.cuda.max_memory_allocated`."
        )
    )
    threads, date = (
        args.threads if args.threads is not None else torch.get_num_threads(),
        _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    )
    head = [
        "## Throughput: DistillModule vs the reference per-class loop",
        f"Command: `{command('throughput', argv)}`",
        f"Date: {date}",
    ]
    section = "\n\n".join(
        [
            *head,
            f"Machine: {machine_line(threads, args.device)}; device: {device.type}",
            workload,
            table,
            *details,
            modes_line,
            speedup_line,
        ]
    )
    print(f"\n{table}\n")
    report.write_section(args.output, MARKER, section)
    print(f"wrote {args.output}\n{modes_line}\n{speedup_line}")


if __name__ == "__main__":
    main()
