"""The Distiller's settings, typed and grouped by the part of an outer iteration that reads them.

``DistillModule``'s constructor arguments are checked there (one sentence per bad value) and then
copied here field by field (:meth:`DistillSettings.of`), so following ``inner_loop`` or
``batch_real`` from the constructor leads to the one line of the
:class:`~lightning_dd.distill.distiller.Distiller` that uses it. The image step is not here: it is
a strategy object (:mod:`lightning_dd.distill.image_step`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MODEL_SOURCES = ("pool", "random")
MATCHES = ("grad", "embed")
CLAMPS = ("per_outer", "per_step")


@dataclass(frozen=True)
class NetworkDraw:
    """How an outer iteration draws its network: a pool member (Acc-DD) or a fresh one (IDC), perhaps perturbed."""

    source: str  # "pool" or "random"
    perturb: bool
    rho_min: float
    rho_max: float


@dataclass(frozen=True)
class Matching:
    """One matching step: real images per class, the cap on decoded synthetic images, the loss."""

    batch_real: int
    max_syn_per_class: int
    match: str  # "grad" (gradient matching) or "embed" (distribution matching)
    metric: str
    augment: str  # DSA transforms, one shared draw per class


@dataclass(frozen=True)
class NetworkUpdate:
    """The network's SGD on real images after every matching step (``images == 0``: none)."""

    images: int  # real images per update: n_data, rounded up to whole batches when asked
    batch: int
    lr: float
    momentum: float
    weight_decay: float
    cutmix_p: float
    augment: str
    spatial: str
    cutout_with_cutmix: bool

    @staticmethod
    def images_for(n_data: int, batch: int, whole_batches: bool) -> int:
        """``n_data``, or ``ceil(n_data / batch) * batch`` when the authors' loop runs whole batches."""
        return -(-n_data // batch) * batch if whole_batches else n_data


@dataclass(frozen=True)
class DistillSettings:
    """Everything a :class:`~lightning_dd.distill.distiller.Distiller` reads, besides its image step."""

    inner_loop: int
    draw: NetworkDraw
    matching: Matching
    update: NetworkUpdate
    bf16: bool  # bfloat16 autocast for the network's convolutions in matching and update

    @classmethod
    def of(cls, hp: Any) -> "DistillSettings":
        """From ``DistillModule``'s (already checked) hyper-parameters, named one by one."""
        batch = hp.batch_real if hp.net_batch_size is None else hp.net_batch_size
        update = NetworkUpdate(
            NetworkUpdate.images_for(hp.n_data, batch, hp.net_whole_batches),
            batch,
            hp.net_lr,
            hp.net_momentum,
            hp.net_weight_decay,
            hp.net_cutmix_p,
            hp.augment,
            hp.net_spatial,
            hp.net_cutout_with_cutmix,
        )
        return cls(
            inner_loop=hp.inner_loop,
            draw=NetworkDraw(hp.model_source, hp.perturb, hp.rho_min, hp.rho_max),
            matching=Matching(hp.batch_real, hp.max_syn_per_class, hp.match, hp.metric, hp.augment),
            update=update,
            bf16=hp.precision == "bf16",
        )
