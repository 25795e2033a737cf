"""Standalone ``lightning-dd`` commands (no Trainer): evaluate, pool, export-folder.

``lightning-dd fit`` (and the other Lightning subcommands) go to LightningCLI; these commands
are dispatched before it by :func:`lightning_dd.cli.main`::

    lightning-dd evaluate lightning_logs/version_0/distilled.pt --net.width 64 --epochs 300 --baselines true
    lightning-dd pool --dataset digits --net.width 16 --size 5 --epochs 2
    lightning-dd export-folder lightning_logs/version_0/distilled.pt distilled_png

Each command is a plain function with type hints and a docstring; jsonargparse turns it into a
parser, so ``--help`` works and dataclass arguments are set field by field (``--net.width 16``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import torch

from lightning_dd.classify import TrainSchedule, test_accuracy
from lightning_dd.data.datamodule import RealDataModule
from lightning_dd.data.sources import DatasetInfo
from lightning_dd.distill.pool import EarlyStagePool, PoolConfig, pool_key, pool_key_fields
from lightning_dd.errors import ConfigError, FileFormatError, LightningDDError
from lightning_dd.evaluation import EvalResult, apply_protocol, describe_info, evaluate_full_set, evaluate_random_subsets, evaluate_repeats, format_table
from lightning_dd.export import export_image_folder, load_distilled
from lightning_dd.nets.spec import NetSpec
from lightning_dd.parsing import CommandParser
from lightning_dd.validation import COUNT, check_class_counts, check_net_fits, check_numbers, check_writable_dir, defaults_of


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; other values go to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda[:N]") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was requested but CUDA is not available; use --device cpu")
    return resolved


def _check_compatible(real: DatasetInfo, exported: DatasetInfo, path: Path) -> None:
    if (real.num_classes, real.channels, tuple(real.image_size)) != (exported.num_classes, exported.channels, tuple(exported.image_size)):
        raise FileFormatError(
            f"{path} holds {exported.num_classes} classes of {exported.channels}x{exported.image_size[0]}x{exported.image_size[1]} "
            f"but dataset {real.name!r} has {real.num_classes} classes of {real.channels}x{real.image_size[0]}x{real.image_size[1]}"
        )


def _net_of_export(config: dict) -> NetSpec:
    """The network the set was distilled with (NetSpec() if the export does not say)."""
    net = config.get("model", {}).get("net") if isinstance(config.get("model"), dict) else None
    if isinstance(net, dict):
        try:
            return NetSpec(**net)
        except TypeError:
            pass
    return NetSpec()


def _validation_of_export(config: dict) -> dict:
    """The validation split the set was distilled beside (``data.val_per_class`` / ``val_seed`` of its config), so random-real
    baselines draw from the same training images and validation scores the same held-out ones."""
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    return {k: int(data[k]) for k in ("val_per_class", "val_seed") if isinstance(data.get(k), int)}


def evaluate(
    path: str,
    protocol: Optional[str] = None,
    net: Optional[NetSpec] = None,
    epochs: int = 300,
    repeats: int = 3,
    batch_size: int = 64,
    lr: float = 0.01,
    augment: str = "color_crop_flip_scale_rotate",
    cutmix_p: float = 0.5,
    baselines: bool = False,
    full_set_epochs: int = 0,
    data_dir: str = "data",
    source_options: Optional[dict] = None,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
) -> list[EvalResult]:
    """Evaluate an exported distilled set: train fresh networks on it, report real test accuracy.

    The test split is that of the dataset named in the export (loaded with RealDataModule);
    the protocol is the one of SyntheticEvaluation (SGD, lr x0.2 at 2/3 and 5/6 of the epochs,
    DSA + CutMix, accuracy of the final epoch).

    Args:
        path: the exported .pt file.
        protocol: a named evaluation, ``long`` (ConvNet-3 w128, 300 epochs) or ``published``
            (IDC's: ConvNet-3 w128, 1000 epochs); it fixes the network, epochs and recipe.
        net: evaluation network; defaults to the network the set was distilled with, and
            --net.* fields override it field by field.
        epochs: training epochs per network (the paper's protocol uses 1000).
        repeats: networks trained (different seeds); also random-subset draws.
        batch_size: SGD minibatch size.
        lr: SGD learning rate.
        augment: DSA transforms (flip is dropped for flip-sensitive data), or none.
        cutmix_p: CutMix probability per minibatch.
        baselines: also evaluate random real subsets with as many images per class as stored.
        full_set_epochs: also train on the full real training set for this many epochs (0: skip).
        data_dir: folder with the real dataset's files.
        source_options: extra options of the dataset source (as RealDataModule's).
        device: auto, cpu or cuda[:N].
        seed: base seed of the evaluation networks and random subsets.
        progress: show progress bars.
    """
    numbers = {"epochs": epochs, "repeats": repeats, "batch_size": batch_size, "lr": lr, "cutmix_p": cutmix_p, "full_set_epochs": full_set_epochs}
    check_numbers(numbers, "--", rules={"epochs": COUNT}, defaults=defaults_of(evaluate))
    settings = apply_protocol(protocol, dict(epochs=epochs, net=net, lr=lr, batch_size=batch_size, augment=augment, cutmix_p=cutmix_p), defaults_of(evaluate), "--")
    path_ = Path(path)
    distilled = load_distilled(path_)
    info = distilled.info
    net = settings.pop("net") or _net_of_export(distilled.config)
    dev = resolve_device(device)
    dm = RealDataModule(info.name, data_dir=data_dir, source_options=source_options, **_validation_of_export(distilled.config))
    dm.setup()
    _check_compatible(dm.info, info, path_)
    check_net_fits(net, info.channels, info.num_classes, info.image_size, "--net")
    check_class_counts(dm.info, dm.train_data, ipc=distilled.ipc if baselines else None, test=dm.test_data, prefix="the export's")
    schedule = TrainSchedule(**settings)
    images, labels = distilled.decoded()
    name = f"distilled, {distilled.ipc}/class" + (f" (x{distilled.factor ** 2} decoded)" if distilled.factor > 1 else "")
    val = dm.val_data
    rows = [evaluate_repeats(name, images, labels, dm.test_data, net, schedule, repeats, seed, dev, progress, val)]
    if baselines:
        rows.append(evaluate_random_subsets(distilled.ipc, dm.train_data, dm.test_data, net, schedule, repeats, seed, dev, progress, val))
    if full_set_epochs > 0:
        rows.append(evaluate_full_set(dm.train_data, dm.test_data, net, schedule, full_set_epochs, repeats, seed, dev, progress, val))
    title = f"## {path_.name}: {describe_info(info)}; net {net.name} depth {net.depth} width {net.width} ({net.norm} norm), {dev.type}"
    print(format_table(rows, title), flush=True)
    return rows


def pool(
    dataset: str = "digits",
    net: NetSpec = NetSpec(),
    size: int = PoolConfig.size,
    epochs: int = PoolConfig.epochs,
    lr: float = PoolConfig.lr,
    momentum: float = PoolConfig.momentum,
    weight_decay: float = PoolConfig.weight_decay,
    batch_size: int = PoolConfig.batch_size,
    augment: str = PoolConfig.augment,
    cutmix_p: float = PoolConfig.cutmix_p,
    spatial: str = PoolConfig.spatial,
    cutout_with_cutmix: bool = PoolConfig.cutout_with_cutmix,
    cache_dir: str = PoolConfig.cache_dir,
    seed: int = 0,
    data_dir: str = "data",
    source_options: Optional[dict] = None,
    device: str = "auto",
    progress: bool = True,
) -> list[float]:
    """Pretrain (or load from the cache) an early-stage pool and print each member's test accuracy.

    With the same settings as a ``fit`` run (``--model.net.*``, ``--model.pool.*``,
    ``--model.seed``) this finds the very pool that run uses, so it can be pretrained ahead of
    time or inspected; the defaults are PoolConfig's, as in ``fit``.

    Args:
        dataset: real dataset the pool is trained on.
        net: network of the pool members.
        size: number of networks M.
        epochs: pretraining epochs on real data.
        lr: SGD learning rate.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        batch_size: SGD minibatch size.
        augment: DSA transforms during pretraining.
        cutmix_p: CutMix probability during pretraining.
        spatial: ``single`` (one of crop / scale / rotate per minibatch) or ``all``.
        cutout_with_cutmix: keep ``cutout`` although CutMix is on.
        cache_dir: where pools are cached.
        seed: member m is initialised from seed + m (DistillModule's seed).
        data_dir: folder with the real dataset's files.
        source_options: extra options of the dataset source (as RealDataModule's).
        device: auto, cpu or cuda[:N].
        progress: show progress bars.
    """
    settings = dict(size=size, epochs=epochs, lr=lr, momentum=momentum, weight_decay=weight_decay, batch_size=batch_size, augment=augment, cutmix_p=cutmix_p, spatial=spatial, cutout_with_cutmix=cutout_with_cutmix)
    check_numbers(settings, "--", defaults=defaults_of(pool))
    config = PoolConfig(**settings, cache_dir=cache_dir)
    dev = resolve_device(device)
    check_writable_dir(cache_dir, "--cache_dir")
    dm = RealDataModule(dataset, data_dir=data_dir, source_options=source_options)
    dm.setup()
    info, train, test = dm.info, dm.train_data, dm.test_data
    check_class_counts(info, train, test=test)
    check_net_fits(net, info.channels, info.num_classes, info.image_size, "--net")
    path = EarlyStagePool.cache_path(config, pool_key(pool_key_fields(net, config, train, seed)))
    cached = path.exists()
    members = EarlyStagePool.build_or_load(net, config, train, seed, dev, progress)
    images, labels = test.images.to(dev), test.labels.to(dev)
    normalize = type(test.normalizer)(info.mean, info.std, dev).uint8
    accuracies = []
    lines = [f"## early-stage pool: {describe_info(info)}; net {net.name} depth {net.depth} width {net.width}; {size} nets x {epochs} epoch(s)", ""]
    lines += ["| member | seed | test accuracy (%) |", "|---:|---:|---:|"]
    for m, state in enumerate(members.members):
        model = net.build(info.channels, info.num_classes, info.image_size)
        model.load_state_dict(state)
        accuracy = 100.0 * test_accuracy(model.to(dev), images, labels, info.num_classes, normalize)
        accuracies.append(accuracy)
        lines.append(f"| {m} | {seed + m} | {accuracy:.2f} |")
    lines += ["", f"mean {sum(accuracies) / len(accuracies):.2f} %; {'loaded from' if cached else 'pretrained and cached in'} {path}"]
    print("\n".join(lines), flush=True)
    return accuracies


def export_folder(path: str, out_dir: str, overwrite: bool = False) -> Path:
    """Write an exported set as an ImageFolder tree: OUT_DIR/<label>_<class>/<index>.png.

    Folder names start with the zero-padded label so torchvision's ImageFolder (which sorts
    folder names as strings) assigns the exported labels.

    Args:
        path: the exported .pt file.
        out_dir: folder to create (written to a temporary folder and renamed into place).
        overwrite: replace an existing folder.
    """
    out = export_image_folder(path, out_dir, overwrite=overwrite)
    count = sum(1 for _ in out.rglob("*.png"))
    print(f"lightning-dd: wrote {count} PNG images to {out}", flush=True)
    return out


COMMANDS: dict[str, Callable] = {"evaluate": evaluate, "pool": pool, "export-folder": export_folder}
POSITIONAL = {"evaluate", "export-folder"}


def summary() -> str:
    """One line per standalone command (for ``lightning-dd --help``)."""
    lines = []
    for name, fn in COMMANDS.items():
        first = (fn.__doc__ or "").strip().splitlines()[0]
        lines.append(f"  {name:<14} {first}")
    return "standalone commands (lightning-dd COMMAND --help):\n" + "\n".join(lines)


def build_parser(name: str):
    """The jsonargparse parser of command ``name``."""
    fn = COMMANDS[name]
    parser = CommandParser(prog=f"lightning-dd {name}", description=(fn.__doc__ or "").strip().splitlines()[0], exit_on_error=True)
    parser.add_function_arguments(fn, fail_untyped=True, as_positional=name in POSITIONAL)
    return parser


def run_command(args: list[str]):
    """Parse ``args`` (``[COMMAND, ...]``) and run the command; returns its result."""
    name, rest = args[0], list(args[1:])
    parser = build_parser(name)
    cfg = parser.parse_args(rest)
    if name == "evaluate":  # --net.* fields override the export's own network, field by field
        try:
            exported = _net_of_export(load_distilled(cfg.path).config)
        except LightningDDError:
            exported = None  # reported by evaluate() itself
        if exported is not None:
            parser.set_defaults(net=exported)
            cfg = parser.parse_args(rest)
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    try:
        init = instantiate(cfg)
    except Exception as err:  # jsonargparse wraps a dataclass's own error (e.g. an unknown net name)
        raise user_error_in(err) or err
    kwargs = {k: v for k, v in vars(init).items() if not k.startswith("__")}
    return COMMANDS[name](**kwargs)


def user_error_in(err: BaseException) -> LightningDDError | None:
    """The LightningDDError that caused ``err``, if any (following ``__cause__``/``__context__``)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, LightningDDError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def is_command(args: list[str]) -> bool:
    return bool(args) and args[0] in COMMANDS

