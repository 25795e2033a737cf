"""Throughput of one distillation inner iteration: the library's DistillModule vs a plain reference loop.

One *inner iteration* = all C classes matched (gradient matching, one synthetic-image step) + the
network's update on ``n_data`` real images (whole minibatches, as the library's default). Two paths run the same seeded synthetic workload:

* ``reference``: :mod:`benchmarks.reference_loop`, the per-class loop of the public IDC/Acc-DD code
  in plain PyTorch (an ``nn.Module`` ConvNet, ``loss.backward()`` and ``optimizer.step()`` per class);
* ``library``: :class:`lightning_dd.DistillModule` driven by a real ``lightning.Trainer`` exactly as
  the CLI drives it (``training_step`` once per inner iteration), on a registered in-memory source
  of random uint8 images; each ``training_step`` is timed by a Callback. One row per precision
  mode: exact fp32, and bf16 autocast where the device computes bf16 natively.

Each path runs in its own subprocess so its peak memory is its own (CPU: growth of the process's
peak RSS, ``VmHWM``, over its resident size after imports; CUDA: ``torch.cuda.max_memory_allocated``).
The script also checks that both paths compute the same matching loss (and image gradient) on the
same inputs (and reports how far bf16 autocast moves them), counts the FLOPs of one matching
class-step with ``FlopCounterMode``, runs a conv2d microbenchmark for the machine's attainable
GFLOP/s, prints a Markdown table, writes it between ``<!-- throughput:start -->`` /
``<!-- throughput:end -->`` in ``--output`` and ends with the line
``speed-up vs reference: <smallest reference/library ratio over the shapes, best mode>x``.

Usage::

    python benchmarks/throughput.py                       # full workload, CPU, both shapes
    python benchmarks/throughput.py --device cuda
    python benchmarks/throughput.py --precision 32,bf16   # force both modes (bf16 is slow without bf16 units)
    python benchmarks/throughput.py --quick --shapes 8x8x1 --output /tmp/bench.md   # seconds, for tests
    python benchmarks/throughput.py --worker library --shapes 28x28x1 --per_class_impl loop   # the library alone, one setting changed
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_loop  # noqa: E402  (the sibling module, also importable as benchmarks.reference_loop)

MARKER = "throughput"
START_MARKER = f"<!-- {MARKER}:start -->"
END_MARKER = f"<!-- {MARKER}:end -->"
RESULT_PREFIX = "THROUGHPUT_RESULT "
ROOT = Path(__file__).resolve().parents[1]
LOSS_TOLERANCE = 1e-4
GRAD_TOLERANCE = 1e-3
BF16_LOSS_TOLERANCE = 1e-2  # bf16 autocast: the matching loss within 1 % of fp32
N_TRAIN = 6000
N_TEST = 100

FULL = reference_loop.Settings()  # ConvNet-3 w128, 10 classes, batch_real 64, IPC 10 x factor 2, n_data 500, batch 128
QUICK = replace(FULL, width=16, ipc=2, n_data=64)


# ------------------------------------------------------------------------------------- helpers
def parse_shape(text: str) -> tuple[int, int, int]:
    """``"32x32x3"`` -> (H, W, C)."""
    try:
        h, w, c = (int(p) for p in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must look like HxWxC (e.g. 32x32x3), got {text!r}") from None
    if min(h, w, c) < 1:
        raise argparse.ArgumentTypeError(f"shape dimensions must be positive, got {text!r}")
    return h, w, c


def parse_shapes(text: str) -> list[tuple[int, int, int]]:
    """``"28x28x1,32x32x3"`` -> [(28, 28, 1), (32, 32, 3)]."""
    shapes = [parse_shape(p.strip()) for p in text.split(",") if p.strip()]
    if not shapes:
        raise argparse.ArgumentTypeError("give at least one shape")
    return shapes


def shape_name(shape: tuple[int, int, int]) -> str:
    return "x".join(str(v) for v in shape)


def source_name(shape: tuple[int, int, int]) -> str:
    return f"benchmark_random_{shape_name(shape)}"


def register_random_source(shape: tuple[int, int, int], settings: reference_loop.Settings) -> str:
    """Register an in-memory dataset of random uint8 images with balanced labels under ``source_name(shape)``."""
    from lightning_dd.data import ImageSplit, register_source
    from lightning_dd.data.sources import make_dataset

    h, w, c = shape
    name = source_name(shape)

    @register_source(name)
    def _load(data_dir: str = "data", download: bool = False):
        images, labels = reference_loop.random_images(N_TRAIN + N_TEST, c, h, w, settings.num_classes, settings.seed)
        train = ImageSplit(images[:N_TRAIN], labels[:N_TRAIN])
        test = ImageSplit(images[N_TRAIN:], labels[N_TRAIN:])
        return make_dataset(name, train, test, [str(k) for k in range(settings.num_classes)], flip_ok=True)

    return name


def synchronizer(device: torch.device):
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


class PeakMemory:
    """Peak memory of this process's workload, from the moment it is created."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            self.kind = "torch.cuda.max_memory_allocated"
            return
        self.kind = "VmHWM growth over VmRSS after imports"
        self.baseline_kb = proc_status_kb("VmRSS")
        try:  # Linux >= 4.0: reset the peak RSS to the current RSS
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
        except OSError:
            self.kind += " (VmHWM not resettable: includes the import peak)"

    def megabytes(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return max(0, proc_status_kb("VmHWM") - self.baseline_kb) / 1024


def matched_per_iteration(settings: reference_loop.Settings) -> int:
    """Images that go through gradient matching in one inner iteration (real + decoded synthetic, all classes)."""
    return settings.num_classes * (settings.batch_real + settings.ipc * settings.factor**2)


def netspec(settings: reference_loop.Settings):
    from lightning_dd.nets import NetSpec

    return NetSpec(name="convnet", depth=settings.depth, width=settings.width, norm="instance", pooling="avg")


# --------------------------------------------------------------------------------------- workers
def run_reference(shape, settings, device, warmup, steps, tuned_allocator: bool = False) -> dict:
    h, w, c = shape
    if tuned_allocator:
        from lightning_dd.allocator import tune_cpu_allocator

        tune_cpu_allocator()
    sync = synchronizer(device)
    memory = PeakMemory(device)
    images, labels = reference_loop.random_images(N_TRAIN + N_TEST, c, h, w, settings.num_classes, settings.seed)
    distiller = reference_loop.ReferenceDistiller(images[:N_TRAIN], labels[:N_TRAIN], settings, device)
    del images, labels
    step_times, match_times = [], []
    for _ in range(warmup + steps):
        sync()
        t0 = time.perf_counter()
        distiller.matching_part()
        sync()
        t1 = time.perf_counter()
        distiller.net_update()
        sync()
        t2 = time.perf_counter()
        step_times.append(t2 - t0)
        match_times.append(t1 - t0)
    return {"step_times": step_times[warmup:], "match_times": match_times[warmup:], "peak_mb": memory.megabytes(), "memory_kind": memory.kind}


LIBRARY_PRECISION = "32"  # in a library worker: its --precision
LIBRARY_CLASSES_PER_PASS: int | None = None  # set from --classes_per_pass (None: the module's device default)
LIBRARY_PER_CLASS_IMPL: str | None = None  # set from --per_class_impl (None: the module's default)
PATHS = ("reference", "reference_tuned", "library")
PATH_LABELS = {"reference": "reference", "reference_tuned": "reference + tuned allocator"}


def run_library(shape, settings, device, warmup, steps) -> dict:
    import lightning as L
    from lightning.pytorch.callbacks import Callback

    from lightning_dd import DistillModule, RealDataModule

    sync = synchronizer(device)
    memory = PeakMemory(device)
    name = register_random_source(shape, settings)

    class StepTimer(Callback):
        """Wall time of every training_step (one inner iteration), device-synchronised."""

        def __init__(self) -> None:
            self.times: list[float] = []
            self.match_times: list[float] = []
            self._start = self._matching = 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            sync()
            self._start = time.perf_counter()
            self._matching = pl_module.part_seconds["matching"]

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            sync()
            self.times.append(time.perf_counter() - self._start)
            self.match_times.append(pl_module.part_seconds["matching"] - self._matching)

    s = settings
    module = DistillModule(
        ipc=s.ipc,
        factor=s.factor,
        init="mix",
        net=netspec(s),
        model_source="random",  # no pool pretraining; the inner step costs the same as with pool members
        perturb=False,
        outer_iterations=1,
        inner_loop=warmup + steps,  # step 0 (which draws the network) is a warm-up step
        batch_real=s.batch_real,
        metric="mse",
        augment=s.augment,
        lr_img=s.lr_img,
        momentum_img=s.momentum_img,
        n_data=s.n_data,
        net_lr=s.net_lr,
        net_momentum=s.net_momentum,
        net_weight_decay=s.net_weight_decay,
        net_batch_size=s.net_batch_size,
        net_cutmix_p=s.cutmix_p,
        seed=s.seed,
        precision=LIBRARY_PRECISION,
        classes_per_pass=LIBRARY_CLASSES_PER_PASS,
        **({} if LIBRARY_PER_CLASS_IMPL is None else {"per_class_impl": LIBRARY_PER_CLASS_IMPL}),
    )
    module.sync_part_timing = True  # the matching part's seconds (part_seconds), device-synchronised
    timer = StepTimer()
    L.seed_everything(s.seed, verbose=False)
    # The CLI's trainer defaults (num_sanity_val_steps=0, log_every_n_steps=10, max_epochs=-1);
    # no logger, checkpointing or progress bar, which run outside training_step anyway.
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        max_epochs=-1,
        num_sanity_val_steps=0,
        log_every_n_steps=10,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(module, datamodule=RealDataModule(name))
    if len(timer.times) != warmup + steps:
        raise RuntimeError(f"expected {warmup + steps} training steps, the Trainer ran {len(timer.times)}")
    return {"step_times": timer.times[warmup:], "match_times": timer.match_times[warmup:], "peak_mb": memory.megabytes(), "memory_kind": memory.kind}


def worker_main(args) -> None:
    device = torch.device(args.device)
    settings = QUICK if args.quick else FULL
    shape = args.shapes[0]
    if args.worker == "library":
        result = run_library(shape, settings, device, args.warmup, args.steps)
    else:
        result = run_reference(shape, settings, device, args.warmup, args.steps, tuned_allocator=args.worker == "reference_tuned")
    result.update(path=args.worker, shape=shape_name(shape), threads=torch.get_num_threads())
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def spawn_worker(path: str, shape, args, precision: str = "32") -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", path, "--shapes", shape_name(shape), "--device", args.device, "--steps", str(args.steps), "--warmup", str(args.warmup), "--precision", precision]
    if args.classes_per_pass is not None:
        command += ["--classes_per_pass", str(args.classes_per_pass)]
    if args.per_class_impl is not None:
        command += ["--per_class_impl", args.per_class_impl]
    if args.quick:
        command.append("--quick")
    if args.threads is not None:
        command += ["--threads", str(args.threads)]
    env = dict(os.environ, LIGHTNING_DD_QUIET="1")
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    results = [line[len(RESULT_PREFIX) :] for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not results:
        raise RuntimeError(f"{path} worker for {shape_name(shape)} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(results[-1])


def run_paths(shape, args) -> dict[str, dict]:
    """Every path, each in fresh subprocesses, alternating ``--repeats`` times; step times are pooled.

    Keys: ``reference``, ``reference_tuned`` (the reference with the library's CPU allocator
    setting; CPU only) and ``library:<precision>`` for every precision in ``args.precisions``.
    """
    keys = [p for p in PATHS[:2] if p != "reference_tuned" or args.device == "cpu"] + [f"library:{p}" for p in args.precisions]
    runs: dict[str, list[dict]] = {k: [] for k in keys}
    for _ in range(args.repeats):
        for key in runs:
            path, _, precision = key.partition(":")
            runs[key].append(spawn_worker(path, shape, args, precision or "32"))
    merged = {}
    for path, results in runs.items():
        merged[path] = {
            "step_times": [t for r in results for t in r["step_times"]],
            "match_times": [t for r in results for t in r["match_times"]],
            "peak_mb": max(r["peak_mb"] for r in results),
            "memory_kind": results[0]["memory_kind"],
            "threads": results[0]["threads"],
        }
    return merged


# ------------------------------------------------------------------ equality check and FLOPs
def equality_and_flops(shape, settings, device, bf16: bool = False) -> dict:
    """Same net, real batch, synthetic images and DSA draws through both paths' matching code.

    Returns both summed losses, their relative difference, the relative difference of the
    gradients w.r.t. the stored synthetic images, and the FLOPs of one class-step of each path.
    With ``bf16``, also the library's loss and image gradient under bf16 autocast (as
    ``DistillModule(precision="bf16")`` computes them) relative to the fp32 reference.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from lightning_dd.augment import DSA
    from lightning_dd.data import RealData, load_source
    from lightning_dd.data.real import Normalizer
    from lightning_dd.distill.functional_net import FunctionalNet
    from lightning_dd.distill.matching import class_matching_loss, matched_parameter_names
    from lightning_dd.distill.synthetic import SyntheticSet
    from lightning_dd.nets import head_parameter_names

    s = settings
    h, w, c = shape
    loaded = load_source(register_random_source(shape, s))
    info = loaded.info
    real_data = RealData(loaded.train, info).to(device)
    generator = torch.Generator().manual_seed(s.seed + 1)
    real = real_data.class_balanced_batch(s.batch_real, generator)  # [C, n, ch, H, W], normalised
    n_real = real.shape[1]
    stored = torch.rand(s.num_classes * s.ipc, c, h, w, generator=generator).to(device)
    dsa = DSA(s.augment, flip_ok=info.flip_ok)
    draws = dsa.sample(s.num_classes, generator)
    normalizer = Normalizer(info.mean, info.std, device)
    spec = netspec(s)

    # Reference: the stock-layer ConvNet, with the seeded weights of the library's ConvNet.
    net = reference_loop.PlainConvNet(c, s.num_classes, (h, w), s.depth, s.width)
    net.load_state_dict(spec.build_seeded(s.seed, c, s.num_classes, (h, w)).state_dict())
    net.to(device)

    def reference_class(images, k):
        stored_k = images[k * s.ipc : (k + 1) * s.ipc]
        return reference_loop.class_loss(net, dsa, real[k], stored_k, k, draws[k : k + 1], s.factor, normalizer.mean, normalizer.std)

    # Library: FunctionalNet with a copy of the same weights, SyntheticSet decoding, class_matching_loss.
    template = spec.build_seeded(s.seed + 12345, c, s.num_classes, (h, w))  # different init: weights come from `net`
    fnet = FunctionalNet(template).to(device)
    weights = fnet.clone_weights(net.state_dict(), device)
    names = matched_parameter_names({n: p.shape for n, p in template.named_parameters()}, head_parameter_names(template))
    matched = [weights[n] for n in names]
    synthetic = SyntheticSet(s.num_classes, s.ipc, c, (h, w), s.factor).to(device)
    with torch.no_grad():
        synthetic.images.copy_(stored)

    def library_pair(k):
        """Class ``k``'s augmented real and synthetic batches, as DistillModule builds them."""
        both = dsa.apply(torch.cat([real[k], normalizer(synthetic.decoded_class_images(k))]), draws[k : k + 1])
        return both[:n_real], both[n_real:]

    def library_class(k):
        return class_matching_loss(lambda x: fnet(weights, x), matched, *library_pair(k), k, "mse")

    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # compare in true fp32
    try:
        ref_images = stored.clone().requires_grad_(True)
        ref_total = sum(reference_class(ref_images, k) for k in range(s.num_classes))
        (ref_grad,) = torch.autograd.grad(ref_total, ref_images)
        lib_total = sum(library_class(k) for k in range(s.num_classes))
        (lib_grad,) = torch.autograd.grad(lib_total, synthetic.images)
        grouped = grouped_check(device, template, weights, names, library_pair, synthetic, s.num_classes, ref_total, ref_grad)
        if bf16:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                bf16_total = sum(library_class(k) for k in range(s.num_classes))
            (bf16_grad,) = torch.autograd.grad(bf16_total, synthetic.images)
            grouped["bf16_rel_diff"] = abs(float(ref_total.detach()) - float(bf16_total.detach())) / max(abs(float(ref_total.detach())), 1e-30)
            grouped["bf16_grad_rel_diff"] = float((ref_grad - bf16_grad).norm() / ref_grad.norm().clamp_min(1e-30))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    ref_value, lib_value = float(ref_total.detach()), float(lib_total.detach())
    rel = abs(ref_value - lib_value) / max(abs(ref_value), 1e-30)
    grad_rel = float((ref_grad - lib_grad).norm() / ref_grad.norm().clamp_min(1e-30))

    # FLOPs of one class-step, as each path executes it (forward, grads, double backward).
    with FlopCounterMode(display=False) as counter:
        ref_images = stored.clone().requires_grad_(True)
        reference_class(ref_images, 0).backward()  # reference: loss.backward() reaches the net's parameters too
    ref_flops = counter.get_total_flops()
    net.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as counter:
        loss = library_class(0)
        loss.backward(inputs=[synthetic.images])  # what DistillModule.manual_backward(loss, inputs=[images]) does
    lib_flops = counter.get_total_flops()
    return {"reference_loss": ref_value, "library_loss": lib_value, "rel_diff": rel, "grad_rel_diff": grad_rel, "reference_flops": ref_flops, "library_flops": lib_flops, **grouped}


def grouped_check(device, template, weights, names, library_pair, synthetic, num_classes, ref_total, ref_grad) -> dict:
    """On CUDA the library matches all classes in one grouped pass: check that path against the reference too."""
    from lightning_dd.distill.grouped import GroupedConvNet, grouped_matching_loss

    if device.type != "cuda":
        return {}
    pairs = [library_pair(k) for k in range(num_classes)]
    labels = torch.arange(num_classes, device=device)
    total = grouped_matching_loss(GroupedConvNet(template), weights, names, torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs]), labels, "mse")
    (grad,) = torch.autograd.grad(total, synthetic.images)
    rel = abs(float(ref_total.detach()) - float(total.detach())) / max(abs(float(ref_total.detach())), 1e-30)
    return {"grouped_loss": float(total.detach()), "grouped_rel_diff": rel, "grouped_grad_rel_diff": float((ref_grad - grad).norm() / ref_grad.norm().clamp_min(1e-30))}


# ------------------------------------------------------------------------ conv2d microbenchmark
def first_pooled_size(shape) -> tuple[int, int]:
    """Spatial size at the input of the ConvNet's second (width -> width) convolution."""
    h, w, _ = shape
    if (h, w) == (28, 28):
        h, w = 32, 32
    if min(h, w) >= 2:
        h, w = h // 2, w // 2
    return h, w


def conv_benchmark(batch: int, width: int, size: tuple[int, int], device: torch.device, bf16: bool, budget_s: float) -> dict:
    """A 3x3 conv ``width -> width``: forward + backward (input and weight gradients); median GFLOP/s."""
    from torch.utils.flop_counter import FlopCounterMode

    sync = synchronizer(device)
    conv = torch.nn.Conv2d(width, width, 3, padding=1).to(device)
    x = torch.randn(batch, width, *size, device=device, requires_grad=True)
    grad_out = torch.randn(batch, width, *size, device=device, dtype=torch.bfloat16 if bf16 else torch.float32)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            y = conv(x)
        y.backward(grad_out)  # (autograd.grad on the leaf x trips FlopCounterMode's module hooks)
        x.grad = conv.weight.grad = conv.bias.grad = None

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    step()  # warm-up
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < 3 or (time.perf_counter() < deadline and len(times) < 200):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"flops": flops, "median_s": median, "gflops": flops / median / 1e9, "reps": len(times)}


# ------------------------------------------------------------------------------ reporting
def machine_description(device: torch.device, threads: int) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        if names:
            cpu = names[0]
    except OSError:
        pass
    text = f"{platform.platform()}; CPU: {cpu}, {os.cpu_count()} logical cores; Python {platform.python_version()}; torch {torch.__version__}; torch threads: {threads}"
    if device.type == "cuda":
        text += f"; GPU: {torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}; cuDNN TF32 for fp32 convolutions: {torch.backends.cudnn.allow_tf32})"
    return text


def command_line(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in ["python", "benchmarks/throughput.py", *argv])


def library_label(args, device: torch.device, precision: str) -> str:
    """``library (fp32)`` / ``library (bf16)``, plus the classes per pass when it is not 1 and a chosen per-class step."""
    from lightning_dd.distill.grouped import default_classes_per_pass

    loop = args.per_class_impl == "loop"  # the per-class loop matches one class per pass
    chunk = args.classes_per_pass if args.classes_per_pass is not None else 1 if loop else default_classes_per_pass(device.type)
    notes = [mode_name(precision)] + ([f"{chunk} classes per pass"] if chunk != 1 else []) + ([f"per-class {args.per_class_impl}"] if args.per_class_impl is not None else [])
    return f"library ({', '.join(notes)})"


def mode_name(precision: str) -> str:
    return "bf16" if precision == "bf16" else "fp32"


def parse_precisions(text: str) -> list[str]:
    """``"auto"`` (kept for main to resolve), or a comma-separated subset of ``32,bf16``."""
    if text == "auto":
        return ["auto"]
    values = [p.strip() for p in text.split(",") if p.strip()]
    if not values or any(p not in ("32", "bf16") for p in values):
        raise argparse.ArgumentTypeError(f"--precision must be auto or a comma-separated subset of 32,bf16; got {text!r}")
    return list(dict.fromkeys(values))


def fast_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively (CUDA with bf16 support; a CPU with AVX512-BF16 or AMX)."""
    from lightning_dd.hardware import cpu_bf16_units

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(cpu_bf16_units())


def write_section(path: Path, section: str) -> None:
    """(Re)write the throughput section of ``path`` with the benchmarks' shared section writer."""
    from common import write_section as write_marked_section  # not at import: workers stay lean

    write_marked_section(path, MARKER, section)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--shapes", type=parse_shapes, default=[(28, 28, 1), (32, 32, 3)], help="comma-separated HxWxC (default 28x28x1,32x32x3)")
    parser.add_argument("--steps", type=int, default=None, help="measured inner iterations per path (default 10; 2 with --quick)")
    parser.add_argument("--warmup", type=int, default=None, help="unmeasured inner iterations first (default 2; 1 with --quick)")
    parser.add_argument("--repeats", type=int, default=1, help="fresh subprocess runs per path, alternating reference/library; step times are pooled (default 1)")
    parser.add_argument("--quick", action="store_true", help="tiny workload (width 16, ipc 2, n_data 64, 2 measured steps) for tests/CI")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md", help="Markdown file whose throughput section is (re)written (default docs/benchmarks.md)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in every process (default: torch's choice)")
    parser.add_argument(
        "--precision",
        type=parse_precisions,
        default=["auto"],
        help="the library's precision modes, comma-separated (32, bf16; DistillModule(precision=...)), each its own row; "
        "default auto: 32, plus bf16 where the device computes it natively (CUDA, or a CPU with AVX512-BF16/AMX). The reference is always fp32",
    )
    parser.add_argument("--classes_per_pass", type=int, default=None, help="the library's classes per matching pass (DistillModule(classes_per_pass=...)); default: its device default (10 on CUDA, 1 on the CPU)")
    parser.add_argument("--per_class_impl", choices=("replay", "loop"), default=None, help="how the library runs its per-class image step (DistillModule(per_class_impl=...)); default: the module's default (replay)")
    parser.add_argument("--worker", choices=PATHS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 2 if args.quick else 10
    if args.warmup is None:
        args.warmup = 1 if args.quick else 2
    if args.steps < 1 or args.warmup < 1 or args.repeats < 1:
        parser.error("--steps, --warmup and --repeats must be >= 1 (the first inner iteration also draws the network)")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    global LIBRARY_PRECISION, LIBRARY_CLASSES_PER_PASS, LIBRARY_PER_CLASS_IMPL
    if args.precision == ["auto"]:
        args.precisions = ["32", "bf16"] if fast_bf16(torch.device(args.device)) else ["32"]
    else:
        args.precisions = args.precision
    LIBRARY_PRECISION = args.precisions[0]
    LIBRARY_CLASSES_PER_PASS = args.classes_per_pass
    LIBRARY_PER_CLASS_IMPL = args.per_class_impl
    if args.classes_per_pass is not None and args.classes_per_pass < 1:
        parser.error("--classes_per_pass must be >= 1")
    if args.worker:
        worker_main(args)
        return

    device = torch.device(args.device)
    settings = QUICK if args.quick else FULL
    s = settings
    per_iteration = matched_per_iteration(s)
    rows, details = [], []
    ratios: dict[str, dict[str, float]] = {p: {} for p in args.precisions}  # precision -> shape -> ratio
    for shape in args.shapes:
        name = shape_name(shape)
        check = equality_and_flops(shape, s, device, bf16="bf16" in args.precisions)
        loss_line = (
            f"loss check {name}: reference {check['reference_loss']:.6e}, library {check['library_loss']:.6e}, "
            f"relative difference {check['rel_diff']:.2e} (< {LOSS_TOLERANCE:g}); image-gradient relative difference {check['grad_rel_diff']:.2e}"
        )
        if "grouped_loss" in check:
            loss_line += (
                f"; grouped pass (all classes at once, the library's CUDA default): loss {check['grouped_loss']:.6e}, relative difference "
                f"{check['grouped_rel_diff']:.2e}, image-gradient relative difference {check['grouped_grad_rel_diff']:.2e}"
            )
            if not (check["grouped_rel_diff"] < LOSS_TOLERANCE and check["grouped_grad_rel_diff"] < GRAD_TOLERANCE):
                raise SystemExit(f"the library's grouped matching differs from the reference on {name}: {loss_line}")
        print(loss_line, flush=True)
        if not check["rel_diff"] < LOSS_TOLERANCE:
            raise SystemExit(f"the library's matching loss differs from the reference's on {name}: {loss_line}")
        if not check["grad_rel_diff"] < GRAD_TOLERANCE:
            raise SystemExit(f"the library's image gradient differs from the reference's on {name}: {loss_line}")
        bf16_line = ""
        if "bf16_rel_diff" in check:
            within = "within" if check["bf16_rel_diff"] < BF16_LOSS_TOLERANCE else "NOT within"
            bf16_line = (
                f"- bf16 autocast (numerics change): matching loss relative difference to the fp32 reference {check['bf16_rel_diff']:.2e} "
                f"({within} {BF16_LOSS_TOLERANCE:g}), image-gradient relative difference {check['bf16_grad_rel_diff']:.2e}; "
                "the distilled sets' accuracy is compared by `benchmarks/precision.py`\n"
            )
            print(bf16_line[2:].strip(), flush=True)
        batch = s.batch_real + s.ipc * s.factor**2
        size = first_pooled_size(shape)
        budget = 0.3 if args.quick else 3.0
        conv = {mode: conv_benchmark(batch, s.width, size, device, mode == "bf16", budget) for mode in ("fp32", "bf16")}
        results = run_paths(shape, args)
        medians = {p: statistics.median(r["step_times"]) for p, r in results.items()}
        match_medians = {p: statistics.median(r["match_times"]) for p, r in results.items()}
        for path in results:
            ratio = medians["reference"] / medians[path]
            if path.startswith("library:"):
                precision = path.partition(":")[2]
                ratios[precision][name] = ratio
                label = library_label(args, device, precision)
            else:
                label = PATH_LABELS[path]
            rows.append(f"| {name} | {label} | {medians[path]:.4f} | {per_iteration / medians[path]:,.0f} | {results[path]['peak_mb']:,.0f} | {ratio:.2f}x |")
        ref_match, ref_flops = match_medians["reference"], check["reference_flops"] * s.num_classes
        matching = [f"reference {ref_match:.4f} s ({ref_flops / ref_match / 1e9:.1f} GFLOP/s)"]
        update = [f"reference {medians['reference'] - ref_match:.4f}"]
        for p in args.precisions:
            key = f"library:{p}"
            lib_match = match_medians[key]
            matching.append(
                f"library {mode_name(p)} {lib_match:.4f} s (ratio {ref_match / lib_match:.2f}x; {check['library_flops'] * s.num_classes / lib_match / 1e9:.1f} GFLOP/s)"
            )
            update.append(f"library {mode_name(p)} {medians[key] - lib_match:.4f}")
        first = results[f"library:{args.precisions[0]}"]
        details.append(
            f"**{name}**\n\n"
            f"- {loss_line}\n"
            + bf16_line
            + f"- matching part (median s per inner iteration, achieved GFLOP/s): {'; '.join(matching)}; network update (s): {', '.join(update)}\n"
            f"- FLOPs of one matching class-step (FlopCounterMode, forward + backward incl. double backward): "
            f"reference {check['reference_flops'] / 1e9:.3f} GFLOP, library {check['library_flops'] / 1e9:.3f} GFLOP\n"
            f"- conv2d microbenchmark (3x3, {s.width}->{s.width}, batch {batch}, {size[0]}x{size[1]}, forward + backward): "
            f"fp32 {conv['fp32']['gflops']:.1f} GFLOP/s, bf16 autocast {conv['bf16']['gflops']:.1f} GFLOP/s\n"
            f"- measured steps: {len(results['reference']['step_times'])} per path ({args.repeats} subprocess run(s) x {args.steps}, each after {args.warmup} warm-up); "
            f"torch threads in the workers: reference {results['reference']['threads']}, library {first['threads']}; "
            f"memory: {first['memory_kind']}\n"
        )
        summary = ", ".join(f"library {mode_name(p)} {medians[f'library:{p}']:.4f} s ({ratios[p][name]:.2f}x)" for p in args.precisions)
        print(f"{name}: reference {medians['reference']:.4f} s, {summary} per inner iteration", flush=True)

    table = "\n".join(
        [
            "| shape | path | s / inner iteration (median) | images matched / s | peak memory MB | speed-up vs reference |",
            "|---|---|---:|---:|---:|---:|",
            *rows,
        ]
    )
    smallest = {p: min(r.values()) for p, r in ratios.items()}  # per mode: its smallest ratio over the shapes
    best = max(smallest, key=smallest.get)
    speedup = smallest[best]
    modes_line = "smallest ratio over the shapes per mode: " + ", ".join(f"{mode_name(p)} {v:.2f}x" for p, v in smallest.items()) + f"; best mode: {mode_name(best)}"
    workload = (
        f"ConvNet-{s.depth} width {s.width}, instance norm, {s.num_classes} classes, batch_real {s.batch_real} per class, "
        f"IPC {s.ipc} x factor {s.factor} ({s.ipc * s.factor**2} decoded synthetic images per class), metric mse, "
        f"augmentation {s.augment}, n_data {s.n_data} in batches of {s.net_batch_size}, {N_TRAIN} random uint8 training images"
        + (" (--quick)" if args.quick else "")
    )
    threads = args.threads if args.threads is not None else torch.get_num_threads()
    section = "\n".join(
        [
            "## Throughput: DistillModule vs the reference per-class loop",
            "",
            f"Command: `{command_line(sys.argv[1:] if argv is None else argv)}`",
            "",
            f"Date: {_dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
            "",
            f"Machine: {machine_description(device, threads)}; device: {device.type}",
            "",
            f"Workload: {workload}. One inner iteration = all classes matched + one synthetic-image step + the network's update. "
            f"Images matched / s = {s.num_classes} x ({s.batch_real} real + {s.ipc * s.factor**2} synthetic) / (s per inner iteration). "
            "Reference: `benchmarks/reference_loop.py` (IDC-style per-class loop; stock-layer ConvNet with `nn.AvgPool2d`; glibc's default malloc settings). "
            + ("Reference + tuned allocator: the same loop after `lightning_dd.allocator.tune_cpu_allocator()`, to show the share of the speed-up that the allocator setting alone gives. " if device.type == "cpu" else "")
            + "Library: `DistillModule.training_step` under `lightning.Trainer`, timed by a Callback (its defaults: the fast 2x2 pooling of `lightning_dd.nets.pooling`; on the CPU the tuned allocator and one class per pass; on CUDA all classes in one grouped pass, `lightning_dd.distill.grouped`). "
            "The reference holds the real images as normalised float32 (as IDC's ClassMemDataLoader), the library as uint8 (normalised per batch). "
            "Each path runs in its own subprocess; peak memory is "
            + ("`torch.cuda.max_memory_allocated`." if device.type == "cuda" else "the growth of the process's peak RSS (VmHWM) over its RSS after imports."),
            "",
            table,
            "",
            *details,
            modes_line,
            "",
            f"speed-up vs reference: {speedup:.2f}x",
        ]
    )
    print()
    print(table)
    print()
    write_section(args.output, section)
    print(f"wrote {args.output}")
    print(modes_line)
    print(f"speed-up vs reference: {speedup:.2f}x")


if __name__ == "__main__":
    main()
