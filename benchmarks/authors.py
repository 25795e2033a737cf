"""The authors' public code (github.com/ncsu-dk-lab/Acc-DD), imported from a checkout with documented shims.

``parity.py`` (their ``condense``) and ``eval_parity.py`` (their ``train``) run it beside ours. It is never copied here: :class:`AuthorsCode` imports a checkout unchanged but for
:data:`SHIMS` (it hard-codes CUDA and has bugs that stop it from running). Its modules have generic top-level names (``data``, ``train``), so never import it in a test process.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import inspect
import io
import math
import os
import runpy
import sys
import types
import warnings
from pathlib import Path
from typing import TYPE_CHECKING
from unittest import mock

import numpy as np
import torch

if TYPE_CHECKING:  # the benchmark settings the command line is built from
    from .parity import Settings

# Every change made to the authors' code's behaviour, in the order the benchmark applies them.
SHIMS = (
    "`argument.py`: `add_argument(..., nagrs='+')` for `--model_path` is a typo that makes argparse raise; while `argument.py` runs, `ArgumentParser.add_argument` renames the keyword "
    "`nagrs` to `nargs`.",
    "`argument.py` is executed with `runpy` on a command line built by the benchmark (it parses `sys.argv` at import).",
    "`condense.py` reads `args.v_max` / `args.v_min`, but the parser defines `--vmax` / `--vmin`: the parsed namespace gets `v_max = vmax` and `v_min = vmin`.",
    "`condense.py` draws the pool member with `random.randint(0, len(model_path))`, whose upper bound is inclusive (an IndexError one time in M + 1): `args.model_path` is a list whose"
    " `len()` reports M - 1, so the unchanged call draws uniformly from the M members.",
    "`misc/utils.py` uses `np.int`, removed in NumPy 1.24: `numpy.int` is set to `int` while their code runs.",
    "On the CPU (`--device cpu`, the default), where their code hard-codes CUDA: the default `device` of `Synthesizer`, `diffaug`, `ClassMemDataLoader` and `misc.utils.random_indices`"
    " becomes the CPU (the loader's as `torch.device('cpu')`, so `train_epoch`'s `loader.device == 'cpu'` string test skips its `.cuda()` copy), `condense` is called with "
    "`device='cpu'`, and the module-level `torch.tensor(..., device='cuda')` of `train.py` is created on the CPU while it is imported.",
    "Their ConvNet's `forward` gets its input with standard NCHW strides (a copy): their crop permutes a 1-channel batch into strides recent PyTorch reads as channels-last, the "
    "convolutions then return channels-last maps and `x.view(x.shape[0], -1)` before the classifier raises. Values are unchanged.",
    "`matplotlib` (plots) and `efficientnet_pytorch` (an unused network) are imported by their modules; when absent, stand-in modules are registered that raise if anything in them is used.",
    "Data: `condense.load_resized_data` returns our reader's Fashion-MNIST training images (uint8, which their `ClassMemDataLoader` converts to [0, 1] exactly as `ToTensor` would) and"
    " no validation loader (their in-loop evaluation is off via their own `--test` flag; both sides are evaluated by our evaluator).",
    "Initial images: `Synthesizer.init` copies the images handed to both sides instead of taking the first `ipc * factor**2` images of each class; the instance is recorded so the "
    "final `synset.data` can be read (`condense` returns nothing).",
    "IDC mode: `condense` always loads a checkpoint from `args.model_path`; `condense.load_state` returns the state dict of a freshly initialised `define_model(args, nclass)` instead "
    "(their IDC code initialises a new network every outer iteration), and `--vmin 0 --vmax 0` makes the perturbation exactly zero.",
    "Acc-DD mode: the pool members are saved as `{'state_dict': ...}` files in their key layout (`layers.conv.d.*`, `layers.norm.d.*`, `classifier.*`) and passed with `--model_path`.",
    "`args.save_dir` points into the benchmark's work folder (their code writes `init.png` / `aug.png` there).",
)


class _StandIn(types.ModuleType):
    """An absent optional dependency: every name taken from it is a stand-in that raises when called."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _StandIn(f"{self.__name__}.{name}")

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{self.__name__} is not installed; the parity benchmark never uses it")


def _register_stand_ins() -> None:
    for root, names in (
        ("matplotlib", ("matplotlib", "matplotlib.pyplot")),
        ("efficientnet_pytorch", ("efficientnet_pytorch",)),
    ):
        if root not in sys.modules and importlib.util.find_spec(root) is None:
            sys.modules.update({name: _StandIn(name) for name in names})
    if isinstance(sys.modules.get("matplotlib"), _StandIn):
        sys.modules["matplotlib"].use = lambda *a, **k: None  # called at import time by misc/utils.py


def _cpu_default(func, param: str, value="cpu") -> None:
    """Replace ``func``'s default ``param='cuda'`` by the CPU (refuses if the default is not 'cuda')."""
    names = [p.name for p in inspect.signature(func).parameters.values() if p.default is not inspect.Parameter.empty]
    defaults = list(func.__defaults__ or ())
    if param not in names or defaults[names.index(param)] != "cuda":
        raise RuntimeError(
            f"the authors' {func.__qualname__} no longer has {param}='cuda'; this benchmark's shims need updating"
        )
    defaults[names.index(param)] = value
    func.__defaults__ = tuple(defaults)


def numpy_int():
    """``np.int`` (removed in NumPy 1.24, used by their ``rand_bbox``) as ``int`` while their code runs."""
    return mock.patch.object(np, "int", int, create=True)


class MemberList(list):
    """``--model_path`` files whose ``len()`` is M - 1: their ``random.randint(0, len(...))`` is inclusive."""

    def __len__(self) -> int:
        return super().__len__() - 1


class AuthorsTrainSet(torch.utils.data.Dataset):
    """Our training split in the shape their loaders read: ``(uint8 [C, H, W], label)`` items, ``targets``, ``nclass``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
        self.images, self.targets, self.nclass = images.cpu(), labels.cpu().tolist(), num_classes

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int):
        return self.images[i], self.targets[i]  # past the end: IndexError, where their loader stops iterating


class AuthorsCode:
    """The authors' modules, imported from a checkout with the shims of :data:`SHIMS` applied."""

    FILES = (
        "argument.py",
        "condense.py",
        "train.py",
        "data.py",
        "weight_perturbation.py",
        "models/convnet.py",
        "misc/augment.py",
        "misc/utils.py",
        "misc/reproduce.py",
    )
    MODULES = ("argument", "condense", "train", "data", "test", "coreset", "weight_perturbation", "misc", "models")

    @classmethod
    def check_checkout(cls, path: str | os.PathLike) -> Path:
        """``path`` resolved, or a one-sentence refusal naming the files a checkout of their code must have (nothing is imported)."""
        path = Path(path).expanduser().resolve()
        if missing := [f for f in cls.FILES if not (path / f).is_file()]:
            raise SystemExit(
                f"--authors_dir {path} is not a checkout of github.com/ncsu-dk-lab/Acc-DD (missing {', '.join(missing)}); clone it and pass its folder"
            )
        return path

    def __init__(self, path: str | os.PathLike, device: str = "cpu") -> None:
        self.path, self.device = self.check_checkout(path), device
        for name in self.MODULES:
            loaded = sys.modules.get(name)
            if loaded is not None and not str(getattr(loaded, "__file__", "") or "").startswith(str(self.path)):
                raise SystemExit(
                    f"a module named {name!r} is already imported from elsewhere; run the benchmark in a fresh process"
                )
        _register_stand_ins()
        if str(self.path) not in sys.path:
            sys.path.insert(0, str(self.path))
        real_tensor = torch.tensor

        def cpu_tensor(*args, **kwargs):
            if str(kwargs.get("device", "")).startswith("cuda"):
                kwargs["device"] = "cpu"
            return real_tensor(*args, **kwargs)

        with (
            mock.patch.object(torch, "tensor", cpu_tensor if device == "cpu" else real_tensor),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            import condense
            import data
            import misc.utils
            import train
        self.condense, self.data, self.train = condense, data, train
        if device == "cpu":
            _cpu_default(condense.Synthesizer.__init__, "device")
            _cpu_default(condense.diffaug, "device")
            _cpu_default(data.ClassMemDataLoader.__init__, "device", torch.device("cpu"))
            _cpu_default(misc.utils.random_indices, "device")
        convnet = sys.modules["models.convnet"].ConvNet
        if not hasattr(
            convnet, "forward_as_written"
        ):  # their forward, given its input with standard (NCHW) strides: see SHIMS
            convnet.forward_as_written = convnet.forward
            convnet.forward = lambda net, x, *a, **k: net.forward_as_written(
                x.clone(memory_format=torch.contiguous_format), *a, **k
            )

    def parse_args(self, cli: list[str]) -> argparse.Namespace:
        """Their ``argument.py`` run on ``cli`` (typo in ``add_argument`` shimmed), plus ``v_max`` / ``v_min``."""
        real_add = argparse._ActionsContainer.add_argument

        def add_argument(self, *args, **kwargs):
            if "nagrs" in kwargs:
                kwargs["nargs"] = kwargs.pop("nagrs")
            return real_add(self, *args, **kwargs)

        with (
            mock.patch.object(argparse._ActionsContainer, "add_argument", add_argument),
            mock.patch.object(sys, "argv", ["argument.py", *cli]),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            args = runpy.run_path(str(self.path / "argument.py"), run_name="argument")["args"]
        args.v_max, args.v_min = args.vmax, args.vmin
        return args

    def cli(self, s: Settings, mode: str, lr_img: float, model_path: list[str]) -> list[str]:
        """The command line of their ``condense.py`` for these settings (``--test``: no in-loop evaluation)."""
        width = s.width / 128
        if int(128 * width) != s.width:
            raise SystemExit(f"--width {s.width} cannot be expressed as the authors' width multiplier of 128")
        rho = ("0", "0") if mode == "idc" else (repr(s.rho_min), repr(s.rho_max))
        return [
            "-d", {"fashion_mnist": "fashion"}[s.dataset], "--ipc", str(s.ipc), "-f", str(s.factor), "-n", "convnet",
            "--depth", str(s.depth), "--width", repr(width), "--niter", str(s.outer), "--inner_loop", str(s.inner),
            "--metric", s.metric, "--lr_img", repr(lr_img), "--mom_img", repr(s.momentum_img),
            "--batch_real", str(s.batch_real), "--batch_syn_max", str(s.max_syn_per_class), "--n_data", str(s.n_data),
            "--lr", repr(s.net_lr), "--momentum", repr(s.net_momentum), "--weight-decay", repr(s.net_weight_decay),
            "--aug_type", s.augment, "--mixup_net", "cut", "--vmin", rho[0], "--vmax", rho[1],
            "--workers", "0", "--test", "--model_path", *model_path,
        ]  # fmt: skip

    def args_for(self, s: Settings, mode: str, effective_lr_img: float, model_path: list[str]) -> argparse.Namespace:
        """Parsed arguments whose image learning rate, after their ``tune_lr_img``, equals ``effective_lr_img``."""
        ratio = self.parse_args(self.cli(s, mode, 1.0, model_path)).lr_img  # their tune_lr_img factor
        args = self.parse_args(self.cli(s, mode, effective_lr_img / ratio, model_path))
        if not math.isclose(args.lr_img, effective_lr_img, rel_tol=1e-9):
            raise RuntimeError(f"their lr_img {args.lr_img} != ours {effective_lr_img}")
        if args.mix_p != s.mix_p:
            raise SystemExit(
                f"the authors' code fixes CutMix p at {args.mix_p} for this dataset; pass --mix_p {args.mix_p}"
            )
        return args

    def condense_run(
        self,
        s: Settings,
        mode: str,
        effective_lr_img: float,
        files: list[str],
        real,
        init: torch.Tensor,
        save_dir: Path,
    ):
        """Their ``condense(args, logger, device=...)`` on this instance's device from ``init`` on ``real`` (our RealData), ``files`` the
        Acc-DD pool, writing into ``save_dir``; returns their final ``synset.data``, the logged lines and their parsed arguments."""
        files = files if mode == "accdd" else ["<fresh network>"]  # IDC mode: see load_state below
        args = self.args_for(s, mode, effective_lr_img, files)
        args.model_path, args.save_dir = MemberList(files), str(save_dir)
        os.makedirs(save_dir, exist_ok=True)
        train_set, condense, recorded, lines = (
            AuthorsTrainSet(real.images, real.labels, real.info.num_classes),
            self.condense,
            [],
            [],
        )

        class InjectedSynthesizer(condense.Synthesizer):
            def init(self, loader, init_type="noise"):
                self.data.data.copy_(init.to(self.data.device))
                recorded.append(self)

        patches = {"Synthesizer": InjectedSynthesizer, "load_resized_data": lambda _args: (train_set, None)}
        if mode == "idc":  # fresh networks
            patches["load_state"] = lambda file_dir, verbose=True: condense.define_model(
                args, train_set.nclass
            ).state_dict()
        with (
            mock.patch.multiple(condense, **patches),
            open(Path(save_dir) / "stdout.txt", "w") as log,
            contextlib.redirect_stdout(log),
            warnings.catch_warnings(),
            numpy_int(),
        ):
            warnings.simplefilter("ignore")
            condense.condense(args, lambda text, *a, **k: lines.append(str(text)), device=self.device)
        if len(recorded) != 1:
            raise RuntimeError(f"their condense built {len(recorded)} synthetic sets, expected 1")
        return recorded[0].data.detach().cpu().clone(), lines, args
