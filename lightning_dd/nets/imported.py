"""Networks given by import path: any ``nn.Module`` class, or function that returns one.

``NetSpec(name="torchvision.models.resnet18")`` (or a user's ``my_package.nets.TinyNet``) builds
its network by calling what the path names with ``kwargs``. The dataset's facts are filled in
where the callable takes them and ``kwargs`` does not set them, so a config names only what
is particular to the network:

* ``num_classes``: when the signature names it or takes ``**kwargs`` (torchvision's builders
  hand their keyword arguments on to the model class);
* ``in_channels``: only when the signature names it (a ``**kwargs`` callable may not expect it).

Grey images on a network whose first convolution takes 3 channels (torchvision's ResNet-18 on
digits or MNIST) go through :class:`RepeatGrey`, which repeats the grey channel three times: the
RGB network sees a grey RGB picture, as when it classifies a black-and-white photo, and nothing
inside it changes. Any other mismatch of channels is refused with one sentence.
"""

from __future__ import annotations

import importlib
import inspect
from types import ModuleType
from typing import Any, Callable, Mapping

import torch
from torch import nn

from lightning_dd.utils.errors import ConfigError

EXAMPLE_PATH = "torchvision.models.resnet18"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return " ".join(text.splitlines()[0].split()).rstrip(".") if text else type(err).__name__


def _import_module(name: str, path: str) -> ModuleType | None:
    """Module ``name``, or None when no such module exists (an error inside it is the user's to see)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name and (name == err.name or name.startswith(err.name + ".")):
            return None
        raise ConfigError(f"net {path!r} cannot be imported: importing {name} failed ({_first_line(err)})") from None
    except Exception as err:  # a syntax error or a failing statement in the user's module
        raise ConfigError(
            f"net {path!r} cannot be imported: importing {name} failed ({type(err).__name__}: {_first_line(err)})"
        ) from None


def import_network(path: str) -> Callable[..., Any]:
    """The class or function ``path`` names (``package.module.Name``), checked to be able to build a network.

    The longest importable module prefix is imported and the rest looked up as attributes, so
    nested names (``package.module.Class.factory``) work too.

    Raises:
        ConfigError: nothing importable is named, or it cannot build an ``nn.Module``.
    """
    parts = path.split(".")
    if len(parts) < 2 or not all(part.isidentifier() for part in parts):
        raise ConfigError(f"net {path!r} is not an import path such as {EXAMPLE_PATH}")
    for cut in range(len(parts) - 1, 0, -1):
        module = _import_module(".".join(parts[:cut]), path)
        if module is None:
            continue
        obj: Any = module
        for i, attr in enumerate(parts[cut:]):
            if not hasattr(obj, attr):
                raise ConfigError(
                    f"net {path!r} cannot be imported: {'.'.join(parts[: cut + i])} has no attribute {attr!r}"
                )
            obj = getattr(obj, attr)
        return _checked_callable(path, obj)
    raise ConfigError(
        f"net {path!r} cannot be imported: there is no module named {parts[0]!r}; install it or check the path"
    )


def _checked_callable(path: str, obj: Any) -> Callable[..., Any]:
    """``obj`` if it can be called to build a network (an ``nn.Module`` class or some function)."""
    if isinstance(obj, nn.Module):
        raise ConfigError(
            f"net {path!r} names an nn.Module instance, which cannot build fresh networks; give its class or a function that builds it"
        )
    if inspect.isclass(obj) and not issubclass(obj, nn.Module):
        raise ConfigError(
            f"net {path!r} names the class {obj.__name__}, which is not an nn.Module; give an nn.Module class or a function that returns one"
        )
    if not callable(obj):
        raise ConfigError(
            f"net {path!r} names a {type(obj).__name__}, not an nn.Module class or a function that returns one"
        )
    return obj


def dataset_arguments(
    factory: Callable[..., Any], given: Mapping[str, Any], channels: int, num_classes: int
) -> dict[str, Any]:
    """The dataset's facts that ``factory`` takes and ``given`` does not set (see the module docstring)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin without a readable signature
        return {}
    named = {
        n
        for n, p in params.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    out: dict[str, Any] = {}
    if "num_classes" not in given and ("num_classes" in named or any_keyword):
        out["num_classes"] = num_classes
    if "in_channels" not in given and "in_channels" in named:
        out["in_channels"] = channels
    return out


def build_imported(path: str, kwargs: Mapping[str, Any], channels: int, num_classes: int) -> nn.Module:
    """Call what ``path`` names with ``kwargs`` (and the dataset's facts it takes); adapt grey input.

    Raises:
        ConfigError: the call fails, returns no ``nn.Module``, or the channels cannot be matched.
    """
    factory = import_network(path)
    arguments = {**kwargs, **dataset_arguments(factory, kwargs, channels, num_classes)}
    try:
        net = factory(**arguments)
    except Exception as err:
        shown = ", ".join(f"{k}={v!r}" for k, v in arguments.items()) or "no arguments"
        raise ConfigError(
            f"net {path!r} could not be built with {shown} ({type(err).__name__}: {_first_line(err)}); check its kwargs"
        ) from None
    if not isinstance(net, nn.Module):
        raise ConfigError(
            f"net {path!r} returned a {type(net).__name__}, not an nn.Module; give an nn.Module class or a function that returns one"
        )
    return adapt_channels(path, net, channels)


def adapt_channels(path: str, net: nn.Module, channels: int) -> nn.Module:
    """``net`` itself, or wrapped in :class:`RepeatGrey` for grey data on an RGB network; other mismatches are refused."""
    first = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None or first.in_channels == channels:
        return net
    if channels == 1 and first.in_channels == 3:
        return RepeatGrey(net)
    raise ConfigError(
        f"net {path!r} takes {first.in_channels}-channel images but the data has {channels} channel(s); set the network's input channels in its kwargs (e.g. in_channels: {channels}) if it takes them"
    )


class RepeatGrey(nn.Module):
    """Feeds grey images to a network that takes RGB ones by repeating the grey channel three times.

    The grey channel is normalised with the dataset's own mean and std before it is repeated, so
    the three channels carry the same values as one would on any grey data. The wrapped
    network's parameters are named ``net.<name>``.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.expand(-1, 3, *x.shape[2:]))


def find_head(net: nn.Module) -> tuple[str, nn.Module] | None:
    """The classifier head: ``(name, module)`` of the last ``nn.Linear`` in module order, else of the last ``nn.Conv2d``.

    Module order is the order in which layers were assigned in ``__init__``; every network of
    the library, torchvision's classifiers and most hand-written ones assign their classifier
    last. A network with no linear layer (an all-convolutional one) ends in a convolution that
    gives the class scores.
    """
    modules = list(net.named_modules())
    for kind in (nn.Linear, nn.Conv2d):
        found = [(name, m) for name, m in modules if isinstance(m, kind)]
        if found:
            return found[-1]
    return None
