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

from lightning_dd.classify import TrainSchedule
from lightning_dd.utils.validation import check_perturbation

MODEL_SOURCES = ("pool", "random")
MATCHES = ("grad", "embed")
CLAMPS = ("per_outer", "per_step")


@dataclass(frozen=True)
class Perturbation:
    """Acc-DD's filter-normalised weight perturbation of the drawn network, magnitudes in ``[rho_min, rho_max]``.

    DistillModule keeps the flat settings ``perturb``, ``rho_min`` and ``rho_max`` (their names in
    configs and checkpoints); the range is checked once, by
    :func:`~lightning_dd.utils.validation.check_perturbation`, with names relative to this class.
    """

    enabled: bool = True
    rho_min: float = 0.01
    rho_max: float = 0.09

    def __post_init__(self) -> None:
        check_perturbation(self.rho_min, self.rho_max, "")


@dataclass(frozen=True)
class NetworkDraw:
    """How an outer iteration draws its network: a pool member (Acc-DD) or a fresh one (IDC), perhaps perturbed."""

    source: str  # "pool" or "random"
    perturbation: Perturbation


@dataclass(frozen=True)
class Matching:
    """One matching step: real images per class, the cap on decoded synthetic images, the loss."""

    batch_real: int
    max_syn_per_class: int
    match: str  # "grad" (gradient matching) or "embed" (distribution matching)
    metric: str
    augment: str  # DSA transforms, one shared draw per class


# DistillModule's flat network-update settings (their names in configs and checkpoints) and the
# TrainSchedule field each one is; ``net_batch_size`` (None: ``batch_real``) is read apart.
NETWORK_UPDATE_FIELDS: dict[str, str] = {
    "net_lr": "lr",
    "net_momentum": "momentum",
    "net_weight_decay": "weight_decay",
    "net_cutmix_p": "cutmix_p",
    "augment": "augment",  # the matching's DSA strategy, shared with the update
    "net_spatial": "spatial",
    "net_cutout_with_cutmix": "cutout_with_cutmix",
}


def network_schedule(hp: Any) -> TrainSchedule:
    """The network update's SGD and augmentation from DistillModule's (already checked) ``net_*`` settings.

    One pass over the update's images per matching step, so ``epochs``, ``milestones`` and
    ``gamma`` are not used (1, none, the default).
    """
    batch = hp.batch_real if hp.net_batch_size is None else hp.net_batch_size
    fields = {field: getattr(hp, name) for name, field in NETWORK_UPDATE_FIELDS.items()}
    return TrainSchedule(epochs=1, milestones=(), batch_size=batch, **fields)


@dataclass(frozen=True)
class NetworkUpdate:
    """The network's SGD on real images after every matching step (``images == 0``: none)."""

    images: int  # real images per update: n_data, rounded up to whole batches when asked
    schedule: TrainSchedule  # its SGD (lr, momentum, weight decay, batch size) and augmentation

    @property
    def batch(self) -> int:
        return self.schedule.batch_size

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
        schedule = network_schedule(hp)
        update = NetworkUpdate(NetworkUpdate.images_for(hp.n_data, schedule.batch_size, hp.net_whole_batches), schedule)
        return cls(
            inner_loop=hp.inner_loop,
            draw=NetworkDraw(hp.model_source, Perturbation(hp.perturb, hp.rho_min, hp.rho_max)),
            matching=Matching(hp.batch_real, hp.max_syn_per_class, hp.match, hp.metric, hp.augment),
            update=update,
            bf16=hp.precision == "bf16",
        )
