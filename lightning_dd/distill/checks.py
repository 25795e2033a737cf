"""DistillModule's start-up checks: its settings alone, then against the data.

:func:`~lightning_dd.preflight.preflight_fit` asks the module (``check_settings``, ``check_data``)
before any pool work; the module hands its settings here. Every refusal is one sentence naming the
setting (:class:`~lightning_dd.utils.errors.ConfigError`). The checks of several processes need the
trainer and live with the strategy (:func:`lightning_dd.distill.strategy.check_processes`).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from lightning_dd.data.real import RealData
from lightning_dd.data.sources import DatasetInfo
from lightning_dd.distill.grouped import supports_grouped
from lightning_dd.distill.image_step import ImageStep
from lightning_dd.distill.pool import PoolConfig
from lightning_dd.distill.synthetic import check_factor
from lightning_dd.utils.errors import ConfigError
from lightning_dd.nets.spec import NetSpec
from lightning_dd.utils.validation import (
    check_class_counts,
    check_net_fits,
    check_net_trains,
    check_numbers,
    check_rho,
    check_writable_dir,
    fields_of,
)


def check_module_numbers(hparams: Mapping[str, Any], prefix: str, defaults: Mapping[str, Any]) -> None:
    """Number ranges from one table (lightning_dd.utils.validation.RULES) and the perturbation range.

    The module checks its own arguments with ``prefix=""``; the CLI checks a config's ``model``
    section with ``prefix="model"`` before the module is built.
    """
    check_numbers({k: v for k, v in hparams.items() if not isinstance(v, Mapping)}, prefix, defaults=defaults)
    check_rho(hparams.get("rho_min"), hparams.get("rho_max"))


def check_settings_alone(
    hparams: Mapping[str, Any], pool: PoolConfig, net: NetSpec, defaults: Mapping[str, Any]
) -> None:
    """Checks without data: numbers (named ``model.*``), the pool's and the network's, the pool cache folder."""
    check_module_numbers(hparams, "model", defaults)  # the pool's numbers: PoolConfig checks them itself when built
    check_numbers(fields_of(net), "model.net")
    if hparams.get("model_source") == "pool":
        check_writable_dir(pool.cache_dir, "model.pool.cache_dir")


def check_settings_against_data(
    hparams: Mapping[str, Any],
    net: NetSpec,
    image_step: ImageStep,
    info: DatasetInfo,
    train: RealData,
    test: RealData | None,
) -> None:
    """Checks against the data: class counts, the factor, the network against the image size and the per-class synthetic batch, classes per pass."""
    check_class_counts(info, train, hparams["ipc"], hparams["batch_real"], test)
    try:
        check_factor(int(hparams["factor"]), info.image_size)
    except ConfigError as err:
        raise ConfigError(f"model.{err}") from None
    check_net_fits(net, info.channels, info.num_classes, info.image_size, "model.net")
    per_class = min(
        int(hparams["ipc"]) * int(hparams["factor"]) ** 2, int(hparams["max_syn_per_class"]), int(hparams["batch_real"])
    )
    check_net_trains(
        net,
        info.channels,
        info.num_classes,
        info.image_size,
        per_class,
        "model.net",
        "match at least 2 images per class (model.ipc >= 2 or model.factor 2, and model.batch_real >= 2)",
    )
    with torch.random.fork_rng(devices=[]):  # building a template must not move the global random stream
        template = net.build(info.channels, info.num_classes, info.image_size)
    image_step.check_grouped(hparams["classes_per_pass"], supports_grouped(template), hparams["match"], net)
