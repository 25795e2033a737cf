"""NetSpec: a network described by plain values, so configs, cache keys and exports can name it."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import nn

from lightning_dd.utils.errors import ConfigError, choose
from lightning_dd.nets.convnet import NORMS, POOLINGS, ConvNet
from lightning_dd.nets.imported import EXAMPLE_PATH, build_imported, find_head, import_network
from lightning_dd.nets.resnet import ResNetAP

NET_NAMES = ("convnet", "resnet_ap")
BUILT_IN_FIELDS = ("depth", "width", "norm", "pooling")


@dataclass(frozen=True)
class NetSpec:
    """Which network to build; the dataset supplies channels, classes and image size.

    ``name`` is a built-in network (``convnet``, ``resnet_ap``) or the import path of any
    ``nn.Module`` class or function that returns one (``torchvision.models.resnet18``,
    ``my_package.nets.TinyNet``), called with ``kwargs`` (:mod:`lightning_dd.nets.imported`).

    The fields are not named ``class_path`` and ``init_args`` as in LightningCLI's class
    settings because jsonargparse reserves both keys: a mapping holding ``class_path`` names the
    class of the setting itself (here NetSpec, any other class is refused), and one holding
    ``init_args`` is read as that class's arguments (jsonargparse 4.53,
    ``_ActionConfigLoad.resolve_subclass_spec`` and ``subclass_spec_as_namespace``).

    Args:
        name: ``convnet``, ``resnet_ap``, or an import path such as ``torchvision.models.resnet18``.
        depth: ConvNet blocks (default 3), or ResNet depth 10 / 18 (built-in networks only).
        width: ConvNet channels (default 128); first-stage channels of a ResNet (64) (built-in networks only).
        norm: ``instance`` (default), ``batch`` or ``none`` (built-in networks only).
        pooling: ConvNet pooling, ``avg`` (default), ``max`` or ``none`` (built-in networks only).
        kwargs: keyword arguments of the network named by import path (plain values);
            ``num_classes`` (and ``in_channels`` where the callable names it) come from the data
            unless set here. Depth, width, norm and pooling are ignored for such a network.
    """

    name: str = "convnet"
    depth: int = 3
    width: int = 128
    norm: str = "instance"
    pooling: str = "avg"
    kwargs: dict | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        if self.imported:
            self._check_imported()
            return
        if self.name not in NET_NAMES:
            raise ConfigError(
                f"unknown net {self.name!r}; choose one of: {', '.join(NET_NAMES)}, or give an import path such as {EXAMPLE_PATH}"
            )
        if self.kwargs:
            raise ConfigError(
                f"net {self.name!r} is built in and takes depth, width, norm and pooling; kwargs is for a network given by import path, so drop it (or set it to null)"
            )
        object.__setattr__(self, "kwargs", None)  # an empty mapping says nothing: keep to_dict as it always was
        choose("norm", self.norm, NORMS)
        choose("pooling", self.pooling, POOLINGS)
        if self.name == "resnet_ap" and self.depth not in ResNetAP.BLOCKS:
            raise ConfigError(f"resnet_ap depth must be 10 or 18, got {self.depth}")
        if self.depth < 1 or self.width < 1:
            raise ConfigError(f"net depth and width must be positive, got depth={self.depth} width={self.width}")

    def _check_imported(self) -> None:
        """Import the network now (a wrong path fails before any work) and reset the fields it ignores."""
        args = {} if self.kwargs is None else self.kwargs
        if not isinstance(args, dict) or not all(isinstance(k, str) for k in args) or not _plain(args):
            raise ConfigError(
                f"net {self.name!r} needs kwargs as a mapping of names to plain values (numbers, strings, booleans, null, lists, mappings), so it can be recorded in caches and exports; got {args!r}"
            )
        import_network(self.name)
        object.__setattr__(self, "kwargs", copy.deepcopy(args))
        defaults = {f.name: f.default for f in fields(self)}
        for key in BUILT_IN_FIELDS:  # ignored here, so equal networks compare equal
            object.__setattr__(self, key, defaults[key])

    @property
    def imported(self) -> bool:
        """Whether the network is given by import path rather than built in."""
        return "." in self.name

    def build(self, channels: int, num_classes: int, image_size: tuple[int, int]) -> nn.Module:
        """Instantiate the network (random weights from torch's global RNG)."""
        size = tuple(int(s) for s in image_size)
        if self.imported:
            return build_imported(self.name, self.kwargs or {}, channels, num_classes)
        if self.name == "convnet":
            return ConvNet(channels, num_classes, size, self.depth, self.width, self.norm, self.pooling)
        return ResNetAP(channels, num_classes, size, self.depth, self.width, self.norm)

    def build_seeded(self, seed: int, channels: int, num_classes: int, image_size) -> nn.Module:
        """Instantiate with weights that depend only on ``seed`` (global RNG left untouched)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.build(channels, num_classes, image_size)

    def to_dict(self) -> dict:
        """Plain values that rebuild the spec (``NetSpec(**d)``); pool and teacher cache keys hash them.

        A built-in network gives exactly the fields it always gave (no ``kwargs``), so the
        caches and exports written before networks could be imported keep their keys.
        """
        if self.imported:
            return {"name": self.name, "kwargs": copy.deepcopy(self.kwargs or {})}
        out = asdict(self)
        del out["kwargs"]
        return out

    def describe(self) -> str:
        """The network in reports: ``convnet depth 3 width 128`` (with the norm when not instance), or ``path(args)``."""
        if self.imported:
            args = ", ".join(f"{k}={v!r}" for k, v in (self.kwargs or {}).items())
            return f"{self.name}({args})" if args else self.name
        text = f"{self.name} depth {self.depth} width {self.width}"
        return text if self.norm == "instance" else f"{text} ({self.norm} norm)"


def _plain(value: Any) -> bool:
    """Whether ``value`` is JSON-like (what YAML gives), so it hashes into cache keys and loads with weights_only."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def head_parameter_names(net: nn.Module) -> set[str]:
    """Names of the classifier head's parameters (excluded from matching by default).

    The head is :func:`~lightning_dd.nets.imported.find_head`'s: the last linear layer in module
    order (the built-in networks' ``classifier``), so any network's head is found the same way.
    """
    head = find_head(net)
    if head is None:
        return set()
    prefix, module = head
    return {f"{prefix}.{n}" for n, _ in module.named_parameters()}
