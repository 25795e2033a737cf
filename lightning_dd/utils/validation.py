"""Start-up checks: refuse what cannot work before any expensive work starts.

Pool pretraining and distillation take minutes to hours; a setting that makes them useless (a
cache folder that cannot be written, a class with fewer images than ``ipc``, a network whose
feature maps shrink to one pixel) must be refused *before* they start, not after. Every check
takes its facts from the objects that will run (the module's hyper-parameters, the datamodule's
data, the callbacks' attributes, the file system), so it judges exactly what would run, and
each failure is one sentence that names the setting and a fix (a
:class:`~lightning_dd.utils.errors.LightningDDError`, printed by the CLI with exit status 2).

This module holds the leaf checks (numbers and their rules, folders, networks against image
sizes, class counts) and imports nothing of the library above :mod:`lightning_dd.utils.errors`. Each
component checks its own settings with them (``check_settings`` / ``check_data`` on the module,
the data module and the callbacks), and :func:`lightning_dd.preflight.preflight_fit` asks every
component of a fit in turn; the standalone commands use the same building blocks.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from lightning_dd.utils.errors import ConfigError, DataError


# ----------------------------------------------------------------------------- numbers
@dataclass(frozen=True)
class Rule:
    """What a numeric setting accepts: a range and whether 0 / ``None`` are allowed."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    optional: bool = False  # None allowed (e.g. classes_per_pass: the device's default)

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not float(value).is_integer():
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {_number(self.low)}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {_number(self.high)}")
        text = f"{kind} {' and '.join(parts)}" if parts else kind
        return text + (" (or null)" if self.optional else "")


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


COUNT = Rule(low=1, integer=True)  # at least one
OPTIONAL_COUNT = Rule(low=1, integer=True, optional=True)
NON_NEGATIVE_INT = Rule(low=0, integer=True)
POSITIVE = Rule(low=0, low_open=True)
NON_NEGATIVE = Rule(low=0)
PROBABILITY = Rule(low=0, high=1)
MOMENTUM = Rule(low=0, high=1, high_open=True)
FINITE = Rule()

# Numeric settings by their last name; a float setting not listed here must still be finite.
RULES: dict[str, Rule] = {
    # DistillModule
    "ipc": COUNT,
    "factor": COUNT,
    "outer_iterations": COUNT,
    "inner_loop": COUNT,
    "batch_real": COUNT,
    "max_syn_per_class": COUNT,
    "net_batch_size": OPTIONAL_COUNT,
    "classes_per_pass": OPTIONAL_COUNT,
    "n_data": NON_NEGATIVE_INT,
    "rho_min": NON_NEGATIVE,
    "rho_max": NON_NEGATIVE,
    "lr_img": POSITIVE,
    "momentum_img": MOMENTUM,
    "net_lr": POSITIVE,
    "net_momentum": MOMENTUM,
    "net_weight_decay": NON_NEGATIVE,
    "net_cutmix_p": PROBABILITY,
    # PoolConfig, TrainSchedule, SyntheticEvaluation, the standalone commands
    "size": COUNT,
    "epochs": NON_NEGATIVE_INT,
    "lr": POSITIVE,
    "momentum": MOMENTUM,
    "weight_decay": NON_NEGATIVE,
    "batch_size": COUNT,
    "cutmix_p": PROBABILITY,
    "gamma": POSITIVE,
    "every_n_outer": NON_NEGATIVE_INT,
    "repeats": COUNT,
    "full_set_epochs": NON_NEGATIVE_INT,
    "eval_batch_size": COUNT,
    "val_per_class": NON_NEGATIVE_INT,
    "val_seed": NON_NEGATIVE_INT,
    "temperature": POSITIVE,  # soft labels' softmax temperature (evaluation, the evaluate command)
    # network
    "depth": COUNT,
    "width": COUNT,
}

# A classifier whose accuracy is measured (an evaluation network, a teacher) trains at least one
# epoch; pool pretraining and ``full_set_epochs`` may train none (RULES' ``epochs``). The
# evaluation's, the evaluate command's and the teacher's checks all pass this table as ``rules``.
TRAINED: dict[str, Rule] = {"epochs": COUNT}


def check_numbers(
    values: Mapping[str, Any],
    prefix: str,
    rules: Mapping[str, Rule] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """Refuse a numeric setting outside its range (or NaN / infinite), naming it as ``prefix.name``.

    Args:
        values: setting name -> value (non-numeric values are skipped unless a rule names them).
        prefix: how the user spells the section, e.g. ``"model"`` or ``"evaluation"``; ``"--"``
            for the flags of a standalone command (``--epochs``), ``""`` for bare names.
        rules: overrides of :data:`RULES` for this section.
        defaults: setting name -> default, quoted in the message as a known-good value.
    """
    table = {**RULES, **(rules or {})}
    for name, value in values.items():
        rule = table.get(name)
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if rule is None:
            if isinstance(value, float):
                rule = FINITE
            else:
                continue
        elif not numeric and value is not None:
            continue  # a non-numeric value has been refused by the parser or the class itself
        if rule.accepts(value):
            continue
        setting = f"{prefix}{name}" if not prefix or prefix.endswith("-") else f"{prefix}.{name}"
        default = (defaults or {}).get(name, inspect.Parameter.empty)
        hint = f"; the default is {default}" if default is not inspect.Parameter.empty and rule.accepts(default) else ""
        raise ConfigError(f"{setting} must be {rule.describe()}, got {value}{hint}")


def check_rho(rho_min: Any, rho_max: Any, prefix: str = "model.") -> None:
    """The perturbation range must not be empty (``prefix``: how the section is spelled, ``""`` for bare names)."""
    if isinstance(rho_min, (int, float)) and isinstance(rho_max, (int, float)) and rho_min > rho_max:
        raise ConfigError(
            f"{prefix}rho_min={rho_min} is larger than {prefix}rho_max={rho_max}; use rho_min <= rho_max (the defaults are 0.01 and 0.09)"
        )


def check_perturbation(rho_min: Any, rho_max: Any, prefix: str = "model.") -> None:
    """The perturbation magnitudes: each in its range (RULES) and ``rho_min <= rho_max``, named ``prefix`` + name."""
    check_numbers({"rho_min": rho_min, "rho_max": rho_max}, prefix.rstrip("."))
    check_rho(rho_min, rho_max, prefix)


def defaults_of(fn: Callable) -> dict[str, Any]:
    """Keyword defaults of a function or class (quoted as known-good values in messages)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def fields_of(obj: Any) -> dict[str, Any]:
    """A dataclass instance's fields as a dict (shallow)."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


# ------------------------------------------------------------------------------- paths
def resolve_path(path: str | os.PathLike) -> Path:
    """``~`` and ``$VARS`` expanded, as the writers expand them."""
    return Path(os.path.expandvars(str(path))).expanduser()


def check_writable_dir(path: str | os.PathLike, setting: str) -> Path:
    """Refuse ``path`` unless it is (or can be created as) a folder this process can write in.

    The nearest existing ancestor must be a folder in which a file can actually be created (a
    test file is made and removed at once), which also catches read-only file systems and
    access-control rules that permission bits do not show.
    """
    target = resolve_path(path)
    probe = target
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = "is a file" if probe == target else f"cannot be created inside the file {probe}"
        raise ConfigError(f"{setting}={path} {where}; choose a folder path")
    try:
        handle, name = tempfile.mkstemp(prefix=".lightning-dd-write-test-", dir=probe)
        os.close(handle)
        os.unlink(name)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        where = "" if probe == target else f" (its nearest existing folder {probe} is not writable)"
        raise ConfigError(
            f"{setting}={path} is not writable{where}: {reason}; choose a writable folder or fix its permissions"
        ) from None
    return target


# ----------------------------------------------------------------------------- networks
def _is_instance_norm(module: nn.Module) -> bool:
    if isinstance(module, nn.GroupNorm):
        return module.num_groups == module.num_channels
    return isinstance(module, nn.InstanceNorm2d)


def _dead_maps(spec, channels: int, num_classes: int, image_size: tuple[int, int]) -> tuple[int, int] | None:
    """The first 1x1 map an instance norm would see (it then outputs a constant), else None.

    Raises what building or running the network raises (too small for its pooling, ...), and a
    ConfigError when its output is not one score per class.
    """
    probe = dataclasses.replace(
        spec, width=min(spec.width, 4)
    )  # same shapes, cheap to run (ignored by imported networks)
    with torch.random.fork_rng(devices=[]):
        net = probe.build(channels, num_classes, tuple(image_size)).eval()
    seen: list[tuple[int, int]] = []
    hooks = [
        m.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape[-2:])))
        for m in net.modules()
        if _is_instance_norm(m)
    ]
    try:
        with torch.no_grad():
            out = net(torch.zeros(2, channels, *image_size))
    finally:
        for hook in hooks:
            hook.remove()
    _check_scores(spec, out, num_classes)
    return next((size for size in seen if size[0] * size[1] == 1), None)


def _check_scores(spec, out: Any, num_classes: int) -> None:
    """Refuse a network whose output is not ``[batch, num_classes]`` scores (e.g. torchvision's 1000 ImageNet classes)."""
    if isinstance(out, torch.Tensor) and tuple(out.shape) == (2, num_classes):
        return
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    raise ConfigError(
        f"{spec.describe()} gives {shape} for a batch of 2 images where {(2, num_classes)} (one score per class) is needed; it must end in a classifier over the data's {num_classes} classes (num_classes is filled in from the data unless its kwargs set it)"
    )


def check_net_fits(spec, channels: int, num_classes: int, image_size: tuple[int, int], setting: str) -> None:
    """Refuse a network that cannot learn on images of this size.

    The network is built (a built-in one at width 4, same shapes) and run once on blank images,
    so a network given by import path that cannot be built or run on the data's images, or that
    does not give one score per class, is refused here with the reason. Instance norm over a 1x1
    feature map outputs its bias whatever the input, so every deeper block and the classifier see
    a constant and accuracy stays at chance (e.g. ConvNet-4 on 8x8 digits): refused too.
    """
    size = f"{image_size[0]}x{image_size[1]}"
    try:
        dead = _dead_maps(spec, channels, num_classes, image_size)
    except ConfigError as err:
        raise ConfigError(f"{setting}: {err}") from None
    except Exception as err:  # e.g. a pooling layer that gets a feature map smaller than its window
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if spec.imported:
            raise ConfigError(
                f"{setting} ({spec.describe()}) cannot run on {channels}x{size} images ({reason}); check its kwargs or use larger images"
            ) from None
        raise ConfigError(
            f"{setting} ({spec.name}, depth {spec.depth}) cannot run on {size} images ({reason}); use a shallower network or larger images"
        ) from None
    if dead is None:
        return
    if spec.imported:
        raise ConfigError(
            f"{setting} ({spec.describe()}) shrinks {size} images to 1x1 feature maps before an instance norm, which then outputs a constant and the network stays at chance accuracy; use larger images or a network that downsamples less"
        )
    fits = [
        d
        for d in range(spec.depth - 1, 0, -1)
        if spec.name == "convnet" and _fits(dataclasses.replace(spec, depth=d), channels, num_classes, image_size)
    ]
    fix = (
        f"use {setting}.depth <= {fits[0]}"
        if fits
        else f"use a ConvNet with fewer blocks or {setting}.norm batch or none"
    )
    raise ConfigError(
        f"{setting}.depth={spec.depth} shrinks {size} images to 1x1 feature maps, where instance norm outputs a constant and the network stays at chance accuracy; {fix}"
    )


def check_net_trains(
    spec, channels: int, num_classes: int, image_size: tuple[int, int], batch: int, setting: str, fix: str
) -> None:
    """Refuse a network that cannot train on batches of ``batch`` images (batch norm on 1x1 maps of one image).

    Batch norm in training mode needs more than one value per channel; a single image whose
    feature maps shrink to 1x1 (torchvision's ResNet-18 on 8x8 digits) gives one, and the run
    would stop at its first matching step. Only ``batch == 1`` can fail so, so only then is the
    network run (in training mode, on blank images).
    """
    if batch > 1:
        return
    with torch.random.fork_rng(devices=[]):
        net = spec.build(channels, num_classes, tuple(image_size)).train()
    try:
        with torch.no_grad():
            net(torch.zeros(batch, channels, *image_size))
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"{setting} ({spec.describe()}) cannot train on {batch} image(s) of {image_size[0]}x{image_size[1]} at a time ({reason}); {fix}"
        ) from None


def _fits(spec, channels, num_classes, image_size) -> bool:
    try:
        return _dead_maps(spec, channels, num_classes, image_size) is None
    except Exception:
        return False


# --------------------------------------------------------------------------------- data
def check_class_counts(
    info, train, ipc: int | None = None, batch_real: int | None = None, test=None, prefix: str = "model"
) -> None:
    """Refuse data that distillation and evaluation cannot use.

    Args:
        info: the dataset's :class:`~lightning_dd.data.sources.DatasetInfo`.
        train: the training split (:class:`~lightning_dd.data.real.RealData`).
        ipc: synthetic images per class: no class may have fewer real images (the set would
            repeat images, and the random-real baseline could not be drawn).
        batch_real: real images per class per matching step: every class's batch is cut to the
            smallest class, which is refused when it would lose more than half of the batch
            (and noted on stderr otherwise).
        test: the test split, which must not be empty (accuracy is measured on it).
        prefix: the config section of ``ipc`` and ``batch_real``.
    """
    if info.num_classes < 2:
        raise DataError(
            f"dataset {info.name!r} has {info.num_classes} class; distillation and accuracy need at least 2 (for image_folder, put each class's images in its own sub-folder of data.data_dir)"
        )
    counts = train.class_counts()
    smallest = min(counts)
    name = info.class_names[counts.index(smallest)]
    if ipc is not None and ipc > smallest:
        raise ConfigError(
            f"{prefix}.ipc={ipc} asks for more synthetic images per class than class {name!r} of {info.name!r} has training images ({smallest}); use {prefix}.ipc <= {smallest} or add images"
        )
    if batch_real is not None and batch_real > smallest:
        # Every class's real batch is cut to the smallest class (classes are matched alike). A
        # small cut is the usual "all images of each class" (DM's 256 on digits); a large one is a
        # mistake the run would hide.
        shrink = f"{prefix}.batch_real={batch_real} is more than class {name!r} of {info.name!r} has training images ({smallest}), so every class's real batch would have {smallest}"
        if smallest < batch_real / 2:
            raise ConfigError(f"{shrink}; use {prefix}.batch_real <= {smallest} or add images")
        print(f"lightning-dd: note: {shrink}", file=sys.stderr, flush=True)
    if test is not None and len(test) == 0:
        raise DataError(
            f"the test split of {info.name!r} is empty, so accuracy cannot be measured; add a test/ folder or raise data.source_options.test_fraction"
        )


def check_source_options(dataset: str, options: Mapping[str, Any], source: Callable) -> None:
    """Refuse ``data.source_options`` keys that the dataset's source does not accept.

    The accepted names are the source function's keyword parameters (``data_dir`` and
    ``download`` have their own settings); a source that takes ``**options`` checks them itself.
    """
    params = inspect.signature(source).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = sorted(
        n
        for n, p in params.items()
        if p.kind is not inspect.Parameter.VAR_POSITIONAL and n not in ("data_dir", "download")
    )
    unknown = sorted(set(options) - set(accepted))
    reserved = sorted(set(options) & {"data_dir", "download"})
    if reserved:
        raise ConfigError(f"data.source_options.{reserved[0]} is a setting of its own; use data.{reserved[0]} instead")
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], accepted, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        takes = f"it accepts {', '.join(accepted)}" if accepted else "it takes none"
        raise ConfigError(
            f"unknown data.source_options key(s) {', '.join(unknown)}{hint} for dataset {dataset!r}; {takes}"
        )
