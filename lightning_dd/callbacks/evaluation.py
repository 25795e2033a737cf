"""SyntheticEvaluation: periodically train fresh networks on the synthetic set and log accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info

from lightning_dd.utils.atomic import atomic_open
from lightning_dd.augment import check_strategy
from lightning_dd.classify import TrainSchedule
from lightning_dd.utils.errors import ConfigError, choose
from lightning_dd.evaluation import (
    PROTOCOL_FIELDS,
    EvalPlan,
    EvalResult,
    NetworkEvaluation,
    apply_protocol,
    check_evaluation_numbers,
    evaluate_network,
    evaluate_repeats,
    format_table,
    net_label,
)
from lightning_dd.export import image_grid
from lightning_dd.nets.spec import NetSpec
from lightning_dd.soft_labels import SOFT_LABEL_MODES, SoftLabeler
from lightning_dd.teacher import TeacherConfig, load_or_train_teacher
from lightning_dd.utils.validation import (
    check_net_fits,
    check_writable_dir,
    defaults_of,
    fields_of,
    resolve_path,
)

# What adds each row of the scores, as a fit's config says it.
SCORE_HINTS = {
    "random": "set evaluation.baselines or evaluation.scores true",
    "full": "set evaluation.full_set_epochs > 0 with evaluation.baselines or evaluation.scores true",
    "set_plain": "set evaluation.scores true",
    "random_plain": "set evaluation.scores true",
    "set_soft": "set evaluation.soft_labels",
    "random_soft": "set evaluation.soft_labels",
}


class SyntheticEvaluation(Callback):
    """Evaluates the synthetic set every ``every_n_outer`` outer iterations and at the end.

    Each evaluation trains ``repeats`` fresh networks on the decoded synthetic set with the DC/
    IDC protocol (SGD, lr decay x0.2 at 2/3 and 5/6, DSA + CutMix) and logs the accuracy of the
    final epoch (%) plus an image grid. When the data holds a validation split out
    (``data.val_per_class``), evaluations during the run score on it only (``eval/val_acc_mean``),
    and the final one reports validation and test; without one they score on test (``eval/acc_mean``).
    At the end it can also evaluate random real subsets of the same size and the full training
    set with the same code, prints the table, writes ``results.json``/``results.md`` to the log
    directory and records the hyper-parameters with the final accuracy (TensorBoard hparams).
    The final report adds DD-Ranking's scores (IOR, HLR, LRS, ARS; :mod:`lightning_dd.scores`)
    that its rows allow (printed, in ``results.json`` and as ``eval/ior`` ... ``eval/ars``), and
    each row's seconds per network. With ``networks``, the final report holds one set of rows
    (and scores) per network, trained with the same recipe: how well the set transfers to other
    architectures.

    Args:
        protocol: a named evaluation (:data:`~lightning_dd.evaluation.PROTOCOLS`): ``long``
            (ConvNet-3 w128, 300 epochs) or ``published`` (IDC's: ConvNet-3 w128, 1000 epochs);
            it fixes epochs, net and the training recipe, None leaves them to the fields below.
        every_n_outer: evaluate after every this many outer iterations (0: only at the end).
        repeats: networks trained per evaluation (different seeds); also random-subset draws.
        epochs: training epochs on the synthetic set (the paper's protocol uses 1000).
        net: evaluation network (None: the distillation network).
        networks: evaluate with each of these networks instead of ``net`` (one row set each in the
            final report); evaluations during the run use the first. A network is a built-in
            one (``{name: convnet, depth: 3}``) or one given by import path
            (``{name: torchvision.models.resnet18}``, see :class:`~lightning_dd.nets.NetSpec`).
        batch_size, lr: SGD settings.
        augment: DSA transforms for evaluation training.
        cutmix_p: CutMix probability.
        spatial: ``single`` (the DSA/IDC evaluation code: colour and flip plus ONE of crop / scale /
            rotate per minibatch) or ``all`` (every listed transform on every minibatch).
        cutout_with_cutmix: keep ``cutout`` in ``augment`` although CutMix is on (the authors'
            code removes it).
        baselines: at the end, also evaluate random real subsets (``repeats`` draws) and the full set
            (``scores`` evaluates them too).
        full_set_epochs: epochs for the full-training-set row (0 skips that row).
        seed: base seed of evaluation networks (independent of distillation randomness).
        progress: show progress bars.
        scores: at the end, also evaluate the set and random real subsets without augmentation
            (and random real with it, even without ``baselines``): the rows of DD-Ranking's ARS.
            Off by default, since it doubles the final evaluation's cost.
        soft_labels: at the end, also evaluate the set and random real learning a teacher's soft
            labels: ``per_image`` (one per image) or ``per_view`` (fresh per augmented view); None: off.
        temperature: softmax temperature of the soft labels (loss: T^2 * KL(teacher || student)).
        teacher: the soft labels' teacher (default net: the evaluation network), trained on the
            real training split and cached, or read from ``teacher.checkpoint``.
    """

    def __init__(
        self,
        protocol: str | None = None,
        every_n_outer: int = 0,
        repeats: int = 3,
        epochs: int = TrainSchedule.epochs,
        net: NetSpec | None = None,
        networks: list[NetSpec] | None = None,
        batch_size: int = TrainSchedule.batch_size,
        lr: float = TrainSchedule.lr,
        augment: str = TrainSchedule.augment,
        cutmix_p: float = TrainSchedule.cutmix_p,
        spatial: str = TrainSchedule.spatial,
        cutout_with_cutmix: bool = TrainSchedule.cutout_with_cutmix,
        baselines: bool = True,
        full_set_epochs: int = 0,
        seed: int = 0,
        progress: bool = True,
        scores: bool = False,
        soft_labels: str | None = None,
        temperature: float = 4.0,
        teacher: TeacherConfig = TeacherConfig(),
    ) -> None:
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
        settings = apply_protocol(protocol, given, defaults_of(type(self).__init__), "evaluation.")
        self.protocol, net, epochs = protocol, settings.pop("net"), settings["epochs"]
        self.every_n_outer, self.repeats, self.epochs, self.net = every_n_outer, repeats, epochs, net
        self.networks = _networks(networks, given["net"], protocol)
        self.schedule = TrainSchedule(**settings)
        check_strategy("evaluation.augment", augment)
        self.schedule.augmentation()  # validates spatial before any training
        self.baselines, self.full_set_epochs, self.seed, self.progress = baselines, full_set_epochs, seed, progress
        if soft_labels is not None:
            choose("evaluation.soft_labels mode", soft_labels, SOFT_LABEL_MODES)
        self.scores, self.soft_labels, self.temperature, self.teacher = scores, soft_labels, temperature, teacher
        self.history: list[tuple[int, EvalResult]] = []
        self.final_rows: list[EvalResult] = []
        self.final_evaluation: NetworkEvaluation | None = None  # the first network's
        self.final_evaluations: list[NetworkEvaluation] = []  # one per network

    needs_test_split = True  # the start-up checks then require the data's test split

    def check_settings(self) -> None:
        """Start-up check of the numbers (asked by :func:`~lightning_dd.preflight.preflight_fit`)."""
        values = {
            "every_n_outer": self.every_n_outer,
            "repeats": self.repeats,
            "full_set_epochs": self.full_set_epochs,
            "temperature": self.temperature,
        }
        values.update({k: v for k, v in fields_of(self.schedule).items() if k != "milestones"})
        check_evaluation_numbers(values, "evaluation", defaults_of(type(self).__init__))
        if self.soft_labels is not None:  # the teacher is needed only at the end: refuse a bad one before the run
            if self.teacher.checkpoint is None:
                check_writable_dir(self.teacher.cache_dir, "evaluation.teacher.cache_dir")
            elif not resolve_path(self.teacher.checkpoint).is_file():
                raise ConfigError(
                    f"evaluation.teacher.checkpoint={self.teacher.checkpoint} is not a file; give the path of a teacher file or state dict"
                )

    def check_data(self, info) -> None:
        """Start-up check that the evaluation (and teacher) network fits the data's images."""
        if self.net is not None:
            check_net_fits(self.net, info.channels, info.num_classes, info.image_size, "evaluation.net")
        for i, spec in enumerate(self.networks or []):
            check_net_fits(spec, info.channels, info.num_classes, info.image_size, f"evaluation.networks[{i}]")
        if self.soft_labels is not None and self.teacher.net is not None:
            check_net_fits(self.teacher.net, info.channels, info.num_classes, info.image_size, "evaluation.teacher.net")

    def recorded_settings(self, pl_module: pl.LightningModule) -> dict:
        """The evaluation to record with an exported set (its config's ``evaluation``), so ``lightning-dd evaluate`` repeats it.

        Plain JSON values: the protocol's name (or None), the network and the training recipe.
        """
        recipe = {
            k: v
            for k, v in fields_of(self.schedule).items()
            if k in PROTOCOL_FIELDS  # the schedule's fields a protocol fixes: the training recipe
        }
        recorded = {"protocol": self.protocol, "net": self._net(pl_module).to_dict(), "repeats": self.repeats, **recipe}
        if self.networks is not None and len(self.networks) > 1:
            recorded["networks"] = [spec.to_dict() for spec in self.networks]
        return recorded

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if trainer.sanity_checking or not getattr(pl_module, "finished_outer", False) or self.every_n_outer <= 0:
            return
        outer = pl_module.outer
        if outer % self.every_n_outer == 0 and outer < pl_module.hparams.outer_iterations:
            self._evaluate_synthetic(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if pl_module.synthetic is None or getattr(pl_module, "interrupted", False):
            return
        result = self._evaluate_synthetic(trainer, pl_module, final=True)
        if not trainer.is_global_zero:
            return
        dm, nets, device = trainer.datamodule, self._nets(pl_module), pl_module.device
        images, labels = pl_module.decoded()
        full_set_epochs = (
            self.full_set_epochs if self.baselines or self.scores else 0
        )  # without baselines, no full-set row (as before)
        plan = EvalPlan(
            self.repeats, self.baselines, full_set_epochs, self.scores, self._soft_labeler(dm, nets[0], device)
        )
        common = (pl_module.hparams.ipc, dm.train_data, dm.test_data)
        evaluations = [
            evaluate_network(
                result.name,
                images,
                labels,
                *common,
                net,
                self.schedule,
                plan,
                self.seed,
                device,
                self.progress,
                _val_split(dm),
                set_row=result if i == 0 else None,
            )
            for i, net in enumerate(nets)
        ]
        self.final_evaluation, self.final_evaluations = evaluations[0], evaluations
        self.final_rows = [row for evaluation in evaluations for row in evaluation.table_rows()]
        self._report(trainer, pl_module, evaluations)

    def _soft_labeler(self, datamodule, net: NetSpec, device) -> SoftLabeler | None:
        """The labeler of the soft-label rows (its teacher trained or loaded now), or None when off."""
        if self.soft_labels is None:
            return None
        teacher = load_or_train_teacher(self.teacher, net, datamodule.train_data, device, self.progress)
        rank_zero_info(
            f"lightning-dd: soft labels ({self.soft_labels}, temperature {self.temperature:g}) from {teacher.describe()}"
        )
        return SoftLabeler(teacher.model, self.soft_labels, self.temperature)

    def _nets(self, pl_module: pl.LightningModule) -> list[NetSpec]:
        """The evaluation networks: ``networks``, else ``net``, else the distillation network."""
        return list(self.networks) if self.networks else [self.net or pl_module.net_spec]

    def _net(self, pl_module: pl.LightningModule) -> NetSpec:
        """The network of the evaluations during the run (and of the teacher by default): the first one."""
        return self._nets(pl_module)[0]

    def _evaluate_synthetic(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, final: bool = False
    ) -> EvalResult:
        """Train ``repeats`` networks on the set; during the run score on validation only when it exists (the test split is for the end)."""
        images, labels = pl_module.decoded()
        name = f"distilled, {pl_module.hparams.ipc}/class (x{pl_module.hparams.factor**2} decoded)"
        result = EvalResult(name)
        if trainer.is_global_zero:
            dm = trainer.datamodule
            val = _val_split(dm)
            score_on = dm.test_data if final or val is None else val
            result = evaluate_repeats(
                name,
                images,
                labels,
                score_on,
                self._net(pl_module),
                self.schedule,
                self.repeats,
                self.seed,
                pl_module.device,
                self.progress,
                val if final else None,
            )
            if final or val is None:
                metrics = {"eval/acc_mean": result.mean, "eval/acc_std": result.std}
                if result.val_accuracies:
                    metrics["eval/val_acc_mean"] = result.val_mean
            else:  # scored on validation: the result's "test" column holds validation accuracy
                result = EvalResult(
                    name,
                    images=result.images,
                    epochs=result.epochs,
                    val_accuracies=result.accuracies,
                    seconds=result.seconds,
                )
                metrics = {"eval/val_acc_mean": result.val_mean}
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)
                if isinstance(logger, TensorBoardLogger):
                    stored, _ = pl_module.distilled()
                    logger.experiment.add_image(
                        "synthetic/images", image_grid(stored, pl_module.hparams.ipc), trainer.global_step
                    )
            self.history.append((pl_module.outer, result))
            split, score = ("test", result.mean) if result.accuracies else ("validation", result.val_mean)
            rank_zero_info(f"lightning-dd: outer {pl_module.outer}: synthetic-set {split} accuracy {score:.2f} %")
        trainer.strategy.barrier("lightning_dd_eval")
        return result

    def _report(self, trainer: pl.Trainer, pl_module: pl.LightningModule, evaluations: list[NetworkEvaluation]) -> None:
        """Print, log and write the final report: every network's rows in one table, one scores line per network.

        The logged metrics and ``results.json``'s ``scores`` are the first network's, as with one
        network; the others' are logged under ``eval/net<i>/`` and listed in ``networks``.
        """
        info, first = pl_module.info, evaluations[0]
        rows = [row for evaluation in evaluations for row in evaluation.table_rows()]
        title = f"## {info.name}: ipc {pl_module.hparams.ipc}, factor {pl_module.hparams.factor}, {pl_module.hparams.model_source} nets, {pl_module.outer} outer x {pl_module.hparams.inner_loop} inner"
        table = format_table(rows, title)
        several = len(evaluations) > 1
        lines = "\n".join(e.scores(SCORE_HINTS).line(net_label(e.net) if several else "") for e in evaluations)
        seconds = sum(e.seconds for e in evaluations)
        print("\n" + table + "\n\n" + lines + f"\nevaluation time: {seconds:.2f} s\n", flush=True)
        metrics = _network_metrics(first, "eval/")
        for i, evaluation in enumerate(evaluations[1:], start=1):
            metrics.update(_network_metrics(evaluation, f"eval/net{i}/"))
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
            if isinstance(logger, TensorBoardLogger):
                logger.log_hyperparams(_flat_hparams(pl_module.hparams), metrics)
        if trainer.log_dir:
            out = Path(trainer.log_dir)
            history = [{"outer": o, **r.to_dict()} for o, r in self.history]
            report = {
                "rows": [r.to_dict() for r in rows],
                "history": history,
                "scores": first.scores(SCORE_HINTS).to_dict(),
                "seconds": seconds,
            }
            if several:
                report["networks"] = [evaluation.to_dict(SCORE_HINTS) for evaluation in evaluations]
            with atomic_open(out / "results.json", "w") as handle:
                json.dump(report, handle, indent=2)
            with atomic_open(out / "results.md", "w") as handle:
                handle.write(table + "\n\n" + lines + "\n")


def _network_metrics(evaluation: NetworkEvaluation, prefix: str) -> dict[str, float]:
    """One network's final accuracies and scores as logged metrics, named ``<prefix>final_acc_mean`` ..."""
    metrics = {prefix + key[len("eval/") :]: value for key, value in _final_metrics(evaluation).items()}
    metrics.update({f"{prefix}{key}": value for key, value in evaluation.scores(SCORE_HINTS).values.items()})
    return metrics


def _networks(networks: list[NetSpec] | None, net: NetSpec | None, protocol: str | None) -> list[NetSpec] | None:
    """``evaluation.networks`` as NetSpecs (plain mappings from a checkpoint or YAML too), refused beside ``net`` or a protocol."""
    if networks is None:
        return None
    if net is not None:
        raise ConfigError(
            "evaluation.net and evaluation.networks were both given; use evaluation.networks alone to evaluate with several networks"
        )
    if protocol is not None:
        raise ConfigError(
            f"evaluation.protocol={protocol} fixes the evaluation network, so it cannot be combined with evaluation.networks; drop one of the two"
        )
    if not networks:
        raise ConfigError("evaluation.networks is empty; give at least one network, e.g. [{name: convnet}]")
    return [NetSpec(**spec) if isinstance(spec, dict) else spec for spec in networks]


def _final_metrics(evaluation: NetworkEvaluation) -> dict[str, float]:
    """The final evaluation's accuracies (%) as logged metrics."""
    rows = evaluation.rows
    metrics = {"eval/final_acc_mean": rows["set"].mean, "eval/final_acc_std": rows["set"].std}
    if rows["set"].val_accuracies:
        metrics["eval/final_val_acc_mean"] = rows["set"].val_mean
    if "random" in rows:
        metrics["eval/random_subset_acc_mean"] = rows["random"].mean
    if "full" in rows:
        metrics["eval/full_set_acc_mean"], metrics["eval/full_set_acc_std"] = rows["full"].mean, rows["full"].std
    return metrics


def _val_split(datamodule):
    """The data module's validation split, or None (no split, or a data module without one)."""
    return getattr(datamodule, "val_data", None)


def _flat_hparams(hparams) -> dict:
    flat = {}
    for key, value in dict(hparams).items():
        if hasattr(value, "__dataclass_fields__"):
            for sub, v in value.__dict__.items():
                flat[f"{key}.{sub}"] = v
        else:
            flat[key] = value
    return flat
