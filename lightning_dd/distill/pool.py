"""Model augmentation (Acc-DD): the early-stage pool and filter-normalised weight perturbation.

Phase 1 trains ``size`` networks on real data for a few epochs and keeps their weights; they are
cached on disk under a key derived from everything that defines them. Phase 2 draws a member
uniformly and perturbs it along two random filter-normalised directions (Li et al. 2018's
loss-landscape directions), giving many diverse, informative networks for the cost of a few.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lightning_dd.utils.atomic import atomic_torch_save
from lightning_dd.augment import check_strategy
from lightning_dd.classify import TrainSchedule, train_classifier
from lightning_dd.data.real import RealData, data_digest
from lightning_dd.utils.errors import FileFormatError
from lightning_dd.nets.spec import NetSpec
from lightning_dd.utils.validation import check_numbers, check_perturbation, defaults_of

POOL_FORMAT = "lightning-dd/pool"
POOL_VERSION = 1


@dataclass(frozen=True)
class PoolConfig:
    """The early-stage pool.

    Args:
        size: number of networks M (5 in the paper).
        epochs: pretraining epochs E on real data (2 for CIFAR / Fashion-MNIST, 10 for ImageNet subsets).
        lr, momentum, weight_decay, batch_size: SGD settings of pretraining (batch 64: the authors'
            ``batch_real``, which their pretraining loader uses).
        augment: DSA transforms during pretraining (CutMix is added with ``cutmix_p``). The
            authors pretrain with their matching strategy ``color_crop_cutout`` minus cutout.
        cutmix_p: CutMix probability during pretraining.
        spatial: ``single`` (one of crop / scale / rotate per minibatch, the authors' code) or ``all``.
        cutout_with_cutmix: keep ``cutout`` although CutMix is on (the authors' code drops it).
        cache_dir: where pools are cached; ``~`` and ``$VARS`` are expanded.
    """

    # The schedule's fields keep their names (config keys ``model.pool.lr``, ...; the cache key is
    # ``asdict`` of them) and their order; defaults other than epochs and augment are TrainSchedule's.
    size: int = 5
    epochs: int = 2
    lr: float = TrainSchedule.lr
    momentum: float = TrainSchedule.momentum
    weight_decay: float = TrainSchedule.weight_decay
    batch_size: int = TrainSchedule.batch_size
    augment: str = "color_crop_cutout"
    cutmix_p: float = TrainSchedule.cutmix_p
    spatial: str = TrainSchedule.spatial
    cutout_with_cutmix: bool = TrainSchedule.cutout_with_cutmix
    cache_dir: str = "~/.cache/lightning-dd/pools"

    def __post_init__(self) -> None:
        PoolConfig.check_numbers(asdict(self), "pool")
        check_strategy("model.pool.augment", self.augment)
        self.schedule().augmentation()  # validates spatial

    @staticmethod
    def check_numbers(values: dict, prefix: str) -> None:
        """The pool's number rules, each setting named ``prefix.name`` (``model.pool`` in a config, ``--`` for the pool command)."""
        check_numbers(values, prefix, defaults=defaults_of(PoolConfig))

    def schedule(self) -> TrainSchedule:
        """The pretraining schedule these fields spell out: a constant learning rate (no milestones)."""
        return TrainSchedule.of(self, milestones=())


def pool_key_fields(net: NetSpec, config: PoolConfig, real: RealData, seed: int) -> dict:
    """Everything that defines a pool's weights (the cache directory does not)."""
    fields = {k: v for k, v in asdict(config).items() if k != "cache_dir"}
    return {
        "format_version": POOL_VERSION,
        "dataset": real.info.name,
        "data": data_digest(real.images, real.labels),
        "net": net.to_dict(),
        "pool": fields,
        "seed": seed,
    }


def pool_key(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:20]


class EarlyStagePool:
    """M state dicts of early-stage networks (CPU tensors, outside any module's parameters).

    Example:
        >>> pool = EarlyStagePool.build_or_load(NetSpec(width=16), PoolConfig(size=2, epochs=0), real, seed=0)
        >>> member = pool.draw(torch.Generator().manual_seed(0))   # index in [0, M)
    """

    def __init__(self, members: list[dict[str, torch.Tensor]], key: str, fields: dict) -> None:
        self.members, self.key, self.fields = members, key, fields

    def __len__(self) -> int:
        return len(self.members)

    def draw(self, generator: torch.Generator) -> int:
        """A member index drawn uniformly from ``[0, M)`` (exclusive upper bound)."""
        return int(torch.randint(len(self.members), (1,), generator=generator).item())

    @staticmethod
    def cache_path(config: PoolConfig, key: str) -> Path:
        return Path(os.path.expandvars(config.cache_dir)).expanduser() / f"pool-{key}.pt"

    @classmethod
    def build_or_load(
        cls,
        net: NetSpec,
        config: PoolConfig,
        real: RealData,
        seed: int,
        device: torch.device | str = "cpu",
        progress: bool = True,
    ) -> "EarlyStagePool":
        """Load the cached pool for these settings, or pretrain it and write the cache atomically.

        A cache file whose stored key fields differ from the requested ones (a different net,
        dataset or schedule under a colliding name) is ignored and rebuilt.
        """
        fields = pool_key_fields(net, config, real, seed)
        key = pool_key(fields)
        path = cls.cache_path(config, key)
        if path.exists():
            try:
                return cls.load(path, expected_fields=fields)
            except FileFormatError as err:
                print(f"lightning-dd: rebuilding pool cache: {err}")
        pool = cls.pretrain(net, config, real, seed, device, progress)
        atomic_torch_save(
            {"format": POOL_FORMAT, "version": POOL_VERSION, "key": key, "fields": fields, "members": pool.members},
            path,
        )
        return pool

    @classmethod
    def load(cls, path: str | os.PathLike, expected_fields: dict | None = None) -> "EarlyStagePool":
        """Read a pool cache, checking its format and (optionally) its key fields."""
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated or foreign file
            raise FileFormatError(f"{path} is not a readable lightning-dd pool file ({type(err).__name__})") from None
        if not isinstance(blob, dict) or blob.get("format") != POOL_FORMAT:
            raise FileFormatError(f"{path} is not a lightning-dd pool file")
        if blob.get("version") != POOL_VERSION:
            raise FileFormatError(
                f"{path} has pool format version {blob.get('version')}, this version reads {POOL_VERSION}"
            )
        if expected_fields is not None and blob.get("fields") != expected_fields:
            raise FileFormatError(f"{path} was built for other settings than requested")
        return cls(blob["members"], blob["key"], blob["fields"])

    @classmethod
    def pretrain(
        cls,
        net: NetSpec,
        config: PoolConfig,
        real: RealData,
        seed: int,
        device: torch.device | str = "cpu",
        progress: bool = True,
    ) -> "EarlyStagePool":
        """Train ``config.size`` networks for ``config.epochs`` epochs on ``real``; member m uses seed ``seed + m``."""
        info = real.info
        fields = pool_key_fields(net, config, real, seed)
        images, labels = real.images.to(device), real.labels.to(device)
        normalizer = (
            real.normalizer
            if real.device == torch.device(device)
            else type(real.normalizer)(info.mean, info.std, device)
        )
        members = []
        for m in range(config.size):
            model = net.build_seeded(seed + m, info.channels, info.num_classes, info.image_size).to(device)
            generator = torch.Generator().manual_seed(seed + m)
            desc = f"pretraining pool net {m + 1}/{config.size}" if progress else None
            train_classifier(model, images, labels, config.schedule(), generator, info.flip_ok, normalizer.uint8, desc)
            members.append({k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
        return cls(members, pool_key(fields), fields)


def perturb(
    params: dict[str, torch.Tensor], rho_min: float, rho_max: float, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Weights moved along two random filter-normalised directions.

    For every tensor with ``ndim > 1``, directions ``d1, d2`` are Gaussian and rescaled filter by
    filter (slices along dim 0) so that ``||d[i]|| = ||w[i]||``; tensors with ``ndim <= 1`` are
    not moved. Magnitudes ``a, b ~ U(rho_min, rho_max)`` with independent random signs; the
    result is ``w + a * d1 + b * d2``.
    """
    check_perturbation(rho_min, rho_max, "")
    draws = torch.rand(4, generator=generator, dtype=torch.float64)
    a = (rho_min + (rho_max - rho_min) * draws[0].item()) * (1.0 if draws[1].item() < 0.5 else -1.0)
    b = (rho_min + (rho_max - rho_min) * draws[2].item()) * (1.0 if draws[3].item() < 0.5 else -1.0)
    out = {}
    for name, w in params.items():
        if w.ndim <= 1 or not torch.is_floating_point(w):
            out[name] = w.clone()
            continue
        d1 = filter_normalized_direction(w, generator)
        d2 = filter_normalized_direction(w, generator)
        out[name] = w + a * d1 + b * d2
    return out


def filter_normalized_direction(w: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A Gaussian direction of ``w``'s shape whose every filter has the norm of ``w``'s filter."""
    d = torch.randn(w.shape, generator=generator, dtype=torch.float32).to(device=w.device, dtype=w.dtype)
    d_norm = d.flatten(1).norm(dim=1).clamp_min(1e-12)
    w_norm = w.flatten(1).norm(dim=1)
    return d * (w_norm / d_norm).view(-1, *([1] * (w.ndim - 1)))
