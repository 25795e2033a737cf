"""Resuming a distillation: which settings may differ from the checkpoint's, and the one rule that says so.

A resumed run must continue the run it resumes: a setting that changes the images or the random
stream (the learning rate, the pool, the factor) would silently give a set that no single run
made. :func:`check_resume` is the only place that compares settings with a checkpoint's. The
module calls it when Lightning loads the checkpoint (``on_load_checkpoint``), so
``trainer.fit(module, ckpt_path=...)`` is checked; ``lightning-dd fit --ckpt_path`` calls it
before anything is built, with only the settings the user gave (the others are the
checkpoint's, merged in by LightningCLI), and applies and announces the :data:`RESUME_SAFE`
changes it returns. Which *data* a run may resume on is the data module's rule
(:func:`lightning_dd.data.datamodule.check_same_data`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from lightning_dd.utils.errors import ConfigError, FileFormatError

# Settings that may differ from the checkpoint's because they change neither the images nor the
# random stream: where the pool is cached, when the run ends, how the (same) matching loss is computed.
RESUME_SAFE = {
    "outer_iterations": "the run continues until this many outer iterations are done",
    "pool.cache_dir": "the pool is read from (or rebuilt identically into) this folder",
    "tune_cpu_allocator": "an allocator setting",
    "classes_per_pass": "the same matching loss, computed in other chunks",
    "per_class_impl": "the same per-class image steps, replayed or looped",
    "mix_downsample": "it shapes only the initial images, made before the checkpoint",
}
# Settings added after checkpoints were already being written: a checkpoint without one of them
# ran with the value here (lightning-dd's behaviour before the setting existed).
EARLIER_BEHAVIOUR = {"net_whole_batches": False, "mix_downsample": "antialias", "per_class_impl": "loop"}


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested settings (dicts, or objects with ``as_dict`` such as jsonargparse namespaces) as ``{"pool.cache_dir": ...}``."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if not isinstance(value, Mapping):
        return {}
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if (isinstance(item, Mapping) or hasattr(item, "as_dict")) and item:
            out.update(flatten(item, name + "."))
        else:
            out[name] = list(item) if isinstance(item, tuple) else item  # a checkpoint may hold a tuple as a list
    return out


def load_checkpoint(path: str | Path) -> dict:
    """The checkpoint at ``path``, or a one-sentence FileFormatError if it is missing or foreign."""
    if Path(path).is_dir():
        raise FileFormatError(
            f"--ckpt_path {path} is a folder; give the .ckpt file inside it (e.g. {Path(path) / 'interrupted.ckpt'})"
        )
    if not Path(path).is_file():
        raise FileFormatError(f"no checkpoint at {path}; check --ckpt_path")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise FileFormatError(
            f"{path} is not a readable checkpoint (truncated or foreign file: {type(err).__name__})"
        ) from None
    if not isinstance(checkpoint, dict) or "lightning_dd" not in checkpoint:
        raise FileFormatError(f"{path} is not a checkpoint written by lightning-dd's DistillModule")
    return checkpoint


def checkpoint_settings(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The module settings a checkpoint ran with, flattened (older checkpoints get :data:`EARLIER_BEHAVIOUR`)."""
    hparams = {k: v for k, v in dict(checkpoint.get("hyper_parameters") or {}).items() if not k.startswith("_")}
    for key, value in EARLIER_BEHAVIOUR.items():
        hparams.setdefault(key, value)
    return flatten(hparams)


def check_resume(
    settings: Mapping[str, Any], checkpoint: Mapping[str, Any], where: str = "the checkpoint"
) -> dict[str, tuple[Any, Any]]:
    """Compare settings with the checkpoint's: refuse a changed one unless it is in :data:`RESUME_SAFE`.

    Args:
        settings: the module settings of the resumed run, nested or flattened. The CLI passes
            only those the user gave; the module passes all of its own.
        checkpoint: the checkpoint (its ``hyper_parameters`` are read).
        where: how the refusal names the checkpoint (``"the checkpoint run.ckpt"``).

    Returns:
        The safe changes, ``{"outer_iterations": (given, checkpoint's)}``, for the caller to apply or announce.

    Raises:
        ConfigError: one sentence naming the first changed setting that is not safe and both values.
    """
    before, now = checkpoint_settings(checkpoint), flatten(dict(settings))
    changes: dict[str, tuple[Any, Any]] = {}
    for key in sorted(before):
        if key not in now or now[key] == before[key]:
            continue
        if key not in RESUME_SAFE:
            raise ConfigError(
                f"model.{key}={now[key]} differs from {before[key]} in {where}; a resumed run keeps the settings it started with, so drop model.{key} or start a new run without ckpt_path"
            )
        changes[key] = (now[key], before[key])
    return changes
