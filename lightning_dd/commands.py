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

import json
import sys
from pathlib import Path
from typing import Callable, Optional

import torch

from lightning_dd.utils.atomic import atomic_open
from lightning_dd.augment import check_strategy
from lightning_dd.classify import TrainSchedule, test_accuracy
from lightning_dd.data.datamodule import RealDataModule
from lightning_dd.data.real import Normalizer
from lightning_dd.data.sources import DatasetInfo
from lightning_dd.distill.pool import EarlyStagePool, PoolConfig, pool_key, pool_key_fields
from lightning_dd.utils.errors import ConfigError, FileFormatError, LightningDDError, choose
from lightning_dd.evaluation import (
    PROTOCOL_FIELDS,
    PROTOCOLS,
    EvalPlan,
    EvalResult,
    NetworkEvaluation,
    apply_protocol,
    check_evaluation_numbers,
    describe_info,
    evaluate_network,
    format_table,
    net_label,
)
from lightning_dd.export import export_image_folder
from lightning_dd.set_format import DistilledSet, load_distilled, to_jsonable
from lightning_dd.nets.spec import NET_NAMES, NetSpec
from lightning_dd.utils.parsing import CommandParser
from lightning_dd.soft_labels import SOFT_LABEL_MODES, SoftLabeler
from lightning_dd.teacher import TeacherConfig, load_or_train_teacher
from lightning_dd.utils.validation import (
    check_class_counts,
    check_net_fits,
    check_writable_dir,
    defaults_of,
    resolve_path,
)


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
    if (real.num_classes, real.channels, tuple(real.image_size)) != (
        exported.num_classes,
        exported.channels,
        tuple(exported.image_size),
    ):
        raise FileFormatError(
            f"{path} holds {exported.num_classes} classes of {exported.channels}x{exported.image_size[0]}x{exported.image_size[1]} "
            f"but dataset {real.name!r} has {real.num_classes} classes of {real.channels}x{real.image_size[0]}x{real.image_size[1]}"
        )


def _net_of_export(config: dict) -> NetSpec:
    """The network the set was evaluated with when recorded, else the one it was distilled with (NetSpec() if the export says neither)."""
    recorded = recorded_evaluation(config).get("net")
    if recorded is not None:
        return recorded
    net = config.get("model", {}).get("net") if isinstance(config.get("model"), dict) else None
    if isinstance(net, dict):
        try:
            return NetSpec(**net)
        except (TypeError, ConfigError):
            pass
    return NetSpec()


# Settings of ``config["evaluation"]`` that ``evaluate`` takes as its defaults, with their types.
RECORDED_TYPES: dict[str, tuple[type, ...]] = {
    "epochs": (int,),
    "repeats": (int,),
    "batch_size": (int,),
    "lr": (int, float),
    "augment": (str,),
    "cutmix_p": (int, float),
    "spatial": (str,),
    "cutout_with_cutmix": (bool,),
}


def recorded_evaluation(config: dict) -> dict:
    """The evaluation recorded with a set (its config's ``evaluation``), as settings of ``evaluate``.

    A set is best compared under the evaluation it was reported with. A recorded ``protocol``
    supplies the fields it fixes unless they are recorded too; values of the wrong type are
    skipped (``evaluate``'s own defaults apply to them). Empty when nothing is recorded.
    """
    recorded = config.get("evaluation") if isinstance(config, dict) else None
    if not isinstance(recorded, dict):
        return {}
    protocol = recorded.get("protocol")
    out = dict(PROTOCOLS.get(protocol, {})) if isinstance(protocol, str) else {}
    for key, kinds in RECORDED_TYPES.items():
        value = recorded.get(key)
        if isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool)):
            out[key] = value
    net = recorded.get("net")
    if isinstance(net, dict):
        try:
            out["net"] = NetSpec(**net)
        except (TypeError, ConfigError):
            pass
    return out


def _validation_of_export(config: dict) -> dict:
    """The validation split the set was distilled beside (``data.val_per_class`` / ``val_seed`` of its config), so random-real
    baselines draw from the same training images and validation scores the same held-out ones."""
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    return {k: int(data[k]) for k in ("val_per_class", "val_seed") if isinstance(data.get(k), int)}


# What adds each row of the scores, as the flags of ``evaluate`` say it.
SCORE_HINTS = {
    "random": "set --baselines true or --scores true",
    "full": "set --full_set_epochs > 0",
    "set_plain": "set --scores true",
    "random_plain": "set --scores true",
    "set_soft": "set --soft_labels",
    "random_soft": "set --soft_labels",
}


def evaluate(
    path: str,
    protocol: Optional[str] = None,
    net: Optional[NetSpec] = None,
    networks: Optional[list[NetSpec]] = None,
    epochs: int = 300,
    repeats: int = 3,
    batch_size: int = TrainSchedule.batch_size,
    lr: float = TrainSchedule.lr,
    augment: str = TrainSchedule.augment,
    cutmix_p: float = TrainSchedule.cutmix_p,
    spatial: str = TrainSchedule.spatial,
    cutout_with_cutmix: bool = TrainSchedule.cutout_with_cutmix,
    baselines: bool = False,
    full_set_epochs: int = 0,
    scores: bool = False,
    soft_labels: Optional[str] = None,
    temperature: float = 4.0,
    teacher: TeacherConfig = TeacherConfig(),
    results: Optional[str] = None,
    data_dir: str = "data",
    source_options: Optional[dict] = None,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
) -> list[EvalResult]:
    """Evaluate an exported distilled set: train fresh networks on it, report real test accuracy.

    The test split is that of the dataset named in the export (loaded with RealDataModule);
    the protocol is the one of SyntheticEvaluation (SGD, lr x0.2 at 2/3 and 5/6 of the epochs,
    DSA + CutMix, accuracy of the final epoch). On the command line the settings default to the
    evaluation recorded with the set (its config's ``evaluation``: net, epochs, recipe, repeats)
    when there is one; flags override them. Beside the accuracies it reports DD-Ranking's
    scores (IOR, HLR, LRS, ARS; :mod:`lightning_dd.scores`) that the evaluated rows allow, and
    each row's seconds per network.

    Args:
        path: the exported .pt file.
        protocol: a named evaluation, ``long`` (ConvNet-3 w128, 300 epochs) or ``published``
            (IDC's: ConvNet-3 w128, 1000 epochs); it fixes the network, epochs and recipe.
        net: evaluation network; defaults to the network recorded with the set (the one it was
            evaluated or distilled with), and --net.* fields override it field by field.
        networks: several evaluation networks, one report row set each (e.g. ``[{name:
            convnet}, {name: resnet_ap, depth: 10}]``); replaces --net (and a protocol's network).
        epochs: training epochs per network (the paper's protocol uses 1000).
        repeats: networks trained (different seeds); also random-subset draws.
        batch_size: SGD minibatch size.
        lr: SGD learning rate.
        augment: DSA transforms (flip is dropped for flip-sensitive data), or none.
        cutmix_p: CutMix probability per minibatch.
        spatial: ``single`` (one of crop / scale / rotate per minibatch) or ``all``.
        cutout_with_cutmix: keep ``cutout`` in --augment although CutMix is on.
        baselines: also evaluate random real subsets with as many images per class as stored.
        full_set_epochs: also train on the full real training set for this many epochs (0: skip); HLR and LRS need it.
        scores: also evaluate the set and random real subsets without augmentation (and random
            real with it), the rows of DD-Ranking's ARS.
        soft_labels: also evaluate the set and random real learning a teacher's soft labels:
            ``per_image`` (one per image) or ``per_view`` (fresh per augmented view); None: off.
        temperature: softmax temperature of the soft labels (loss: T^2 * KL(teacher || student)).
        teacher: the soft labels' teacher (default net: the first evaluation network), trained
            on the real training split and cached, or read from --teacher.checkpoint.
        results: also write the report as JSON to this file.
        data_dir: folder with the real dataset's files.
        source_options: extra options of the dataset source (as RealDataModule's).
        device: auto, cpu or cuda[:N].
        seed: base seed of the evaluation networks and random subsets.
        progress: show progress bars.
    """
    numbers = {
        "epochs": epochs,
        "repeats": repeats,
        "batch_size": batch_size,
        "lr": lr,
        "cutmix_p": cutmix_p,
        "full_set_epochs": full_set_epochs,
        "temperature": temperature,
    }
    check_evaluation_numbers(numbers, "--", defaults_of(evaluate))
    given = dict(
        epochs=epochs,
        net=net,
        lr=lr,
        batch_size=batch_size,
        augment=augment,
        cutmix_p=cutmix_p,
        spatial=spatial,
        cutout_with_cutmix=cutout_with_cutmix,
    )
    settings = apply_protocol(protocol, given, defaults_of(evaluate), "--")
    if soft_labels is not None:
        choose("--soft_labels mode", soft_labels, SOFT_LABEL_MODES)
    if results:
        check_results_path(results)
    path_ = Path(path)
    distilled = load_distilled(path_)
    info = distilled.info
    nets = _evaluation_networks(settings.pop("net"), net, networks, distilled.config)
    schedule = _schedule(settings)
    dev = resolve_device(device)
    random_rows = baselines or scores or soft_labels is not None
    dm = _real_data_for(distilled, path_, nets, data_dir, source_options, random_rows)
    labeler, teacher_line = _soft_labeler(soft_labels, temperature, teacher, nets[0][0], dm, dev, progress)
    plan = EvalPlan(repeats, baselines, full_set_epochs, scores, labeler)
    images, labels = distilled.decoded()
    name = f"distilled, {distilled.ipc}/class" + (f" (x{distilled.factor**2} decoded)" if distilled.factor > 1 else "")
    evaluations = [
        evaluate_network(
            name,
            images,
            labels,
            distilled.ipc,
            dm.train_data,
            dm.test_data,
            spec,
            schedule,
            plan,
            seed,
            dev,
            progress,
            dm.val_data,
        )
        for spec, _ in nets
    ]
    title = f"## {path_.name}: {describe_info(info)}; {_nets_text([spec for spec, _ in nets])}, {dev.type}"
    print(_report_text(evaluations, title, teacher_line), flush=True)
    if results:
        _write_results(results, path_, info, dev, schedule, evaluations, teacher_line, repeats, seed)
    return [row for evaluation in evaluations for row in evaluation.table_rows()]


def _real_data_for(
    distilled: DistilledSet,
    path: Path,
    nets: list[tuple[NetSpec, str]],
    data_dir: str,
    source_options,
    random_rows: bool,
) -> RealDataModule:
    """The set's real data (its validation split too), checked against the set and the networks before any training."""
    info = distilled.info
    dm = RealDataModule(
        info.name, data_dir=data_dir, source_options=source_options, **_validation_of_export(distilled.config)
    )
    dm.setup()
    _check_compatible(dm.info, info, path)
    for spec, setting in nets:
        check_net_fits(spec, info.channels, info.num_classes, info.image_size, setting)
    check_class_counts(
        dm.info, dm.train_data, ipc=distilled.ipc if random_rows else None, test=dm.test_data, prefix="the export's"
    )
    return dm


def _evaluation_networks(
    resolved: Optional[NetSpec], net: Optional[NetSpec], networks: Optional[list[NetSpec]], config: dict
) -> list[tuple[NetSpec, str]]:
    """The networks to evaluate with the flag that names each (for error messages)."""
    if networks is not None:
        if net is not None:
            raise ConfigError("--net and --networks were both given; use --networks alone to evaluate several networks")
        if not networks:
            raise ConfigError("--networks is empty; give at least one network, e.g. --networks '[{name: convnet}]'")
        return [(spec, f"--networks[{i}]") for i, spec in enumerate(networks)]
    return [(resolved or _net_of_export(config), "--net")]


def _nets_text(nets: list[NetSpec]) -> str:
    if len(nets) == 1:
        net = nets[0]
        return (
            f"net {net.name} depth {net.depth} width {net.width} ({net.norm} norm)"
            if net.name in NET_NAMES
            else f"net {net_label(net)}"
        )
    return "networks " + "; ".join(net_label(net) for net in nets)


def _schedule(settings: dict) -> TrainSchedule:
    """The evaluation schedule of the checked settings, its augmentation names checked before any training."""
    check_strategy("--augment", settings["augment"])
    schedule = TrainSchedule(**settings)
    try:
        schedule.augmentation()
    except ConfigError as err:
        raise ConfigError(f"--spatial: {err}") from None
    return schedule


def _soft_labeler(
    mode: Optional[str],
    temperature: float,
    config: TeacherConfig,
    default_net: NetSpec,
    dm: RealDataModule,
    device: torch.device,
    progress: bool,
) -> tuple[Optional[SoftLabeler], str]:
    """The labeler of the soft-label rows (None when off) and a line that says which teacher it uses."""
    if mode is None:
        return None, ""
    info = dm.info
    if config.checkpoint is None:
        check_writable_dir(config.cache_dir, "--teacher.cache_dir")
    if config.net is not None:
        check_net_fits(config.net, info.channels, info.num_classes, info.image_size, "--teacher.net")
    teacher = load_or_train_teacher(config, default_net, dm.train_data, device, progress)
    normalize = Normalizer(info.mean, info.std, device).uint8
    accuracy = 100.0 * test_accuracy(
        teacher.model, dm.test_data.images.to(device), dm.test_data.labels.to(device), info.num_classes, normalize
    )
    line = f"{teacher.describe()}; test accuracy {accuracy:.2f} %; soft labels {mode.replace('_', ' ')}, temperature {temperature:g}"
    return SoftLabeler(teacher.model, mode, temperature), line


def _report_text(evaluations: list[NetworkEvaluation], title: str, teacher_line: str) -> str:
    """The table of every network's rows, then one scores line and the evaluation time per network."""
    rows = [row for evaluation in evaluations for row in evaluation.table_rows()]
    lines = [format_table(rows, title), ""]
    if teacher_line:
        lines.append(teacher_line)
    for evaluation in evaluations:
        label = net_label(evaluation.net)
        lines.append(evaluation.scores(SCORE_HINTS).line(label))
    lines.append("evaluation time: " + "; ".join(f"{net_label(e.net)} {e.seconds:.2f} s" for e in evaluations))
    return "\n".join(lines)


def _write_results(
    path: str,
    set_path: Path,
    info: DatasetInfo,
    device: torch.device,
    schedule: TrainSchedule,
    evaluations: list[NetworkEvaluation],
    teacher_line: str,
    repeats: int,
    seed: int,
) -> None:
    """The report as JSON (accuracies in %, scores as fractions, seconds), written atomically."""
    report = {
        "set": str(set_path),
        "dataset": info.name,
        "device": device.type,
        "schedule": to_jsonable(schedule),
        "repeats": repeats,
        "seed": seed,
        "teacher": teacher_line or None,
        "networks": [evaluation.to_dict(SCORE_HINTS) for evaluation in evaluations],
    }
    with atomic_open(check_results_path(path), "w") as handle:
        json.dump(report, handle, indent=2)


def check_results_path(path: str) -> Path:
    """``--results`` resolved, refused when its folder cannot be written (before any training, when called early)."""
    target = resolve_path(path)
    if target.is_dir():
        raise ConfigError(f"--results={path} is a folder; give a file path such as {Path(path) / 'results.json'}")
    check_writable_dir(target.parent, "--results")
    return target


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
    settings = dict(
        size=size,
        epochs=epochs,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        batch_size=batch_size,
        augment=augment,
        cutmix_p=cutmix_p,
        spatial=spatial,
        cutout_with_cutmix=cutout_with_cutmix,
    )
    PoolConfig.check_numbers(settings, "--")
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
    lines = [
        f"## early-stage pool: {describe_info(info)}; net {net.name} depth {net.depth} width {net.width}; {size} nets x {epochs} epoch(s)",
        "",
    ]
    lines += ["| member | seed | test accuracy (%) |", "|---:|---:|---:|"]
    for m, state in enumerate(members.members):
        model = net.build(info.channels, info.num_classes, info.image_size)
        model.load_state_dict(state)
        accuracy = 100.0 * test_accuracy(model.to(dev), images, labels, info.num_classes, normalize)
        accuracies.append(accuracy)
        lines.append(f"| {m} | {seed + m} | {accuracy:.2f} |")
    lines += [
        "",
        f"mean {sum(accuracies) / len(accuracies):.2f} %; {'loaded from' if cached else 'pretrained and cached in'} {path}",
    ]
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
    parser = CommandParser(
        prog=f"lightning-dd {name}", description=(fn.__doc__ or "").strip().splitlines()[0], exit_on_error=True
    )
    parser.add_function_arguments(fn, fail_untyped=True, as_positional=name in POSITIONAL)
    return parser


def run_command(args: list[str]):
    """Parse ``args`` (``[COMMAND, ...]``) and run the command; returns its result."""
    name, rest = args[0], list(args[1:])
    parser = build_parser(name)
    cfg = parser.parse_args(rest)
    if name == "evaluate":
        cfg = _with_export_defaults(parser, cfg, rest)
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    try:
        init = instantiate(cfg)
    except Exception as err:  # jsonargparse wraps a dataclass's own error (e.g. an unknown net name)
        raise user_error_in(err) or err
    kwargs = {k: v for k, v in vars(init).items() if not k.startswith("__")}
    return COMMANDS[name](**kwargs)


def _with_export_defaults(parser, cfg, rest: list[str]):
    """``evaluate``'s flags parsed again over the defaults recorded with the set, so flags override them field by field.

    The defaults are the evaluation recorded with the set (:func:`recorded_evaluation`) and its
    network; a ``--protocol`` on the command line fixes its own fields instead, and
    ``--networks`` replaces the network (``--net.*`` beside it is refused).
    """
    try:
        config = load_distilled(cfg.path).config
    except LightningDDError:
        return cfg  # reported by evaluate() itself
    defaults = {**recorded_evaluation(config), "net": _net_of_export(config)}
    if cfg.protocol is not None:
        defaults = {k: v for k, v in defaults.items() if k not in PROTOCOL_FIELDS}
    parser.set_defaults(**defaults)
    cfg = parser.parse_args(rest)
    if cfg.networks is not None:
        if any(a == "--net" or a.startswith(("--net.", "--net=")) for a in rest):
            raise ConfigError("--net and --networks were both given; use --networks alone to evaluate several networks")
        cfg.net = None
    recorded = {k: v for k, v in recorded_evaluation(config).items() if k in defaults}
    if recorded:
        shown = ", ".join(f"{k} {net_label(v) if isinstance(v, NetSpec) else v}" for k, v in recorded.items())
        print(
            f"lightning-dd: evaluating with the settings recorded with the set ({shown}); flags override them",
            file=sys.stderr,
            flush=True,
        )
    return cfg


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
