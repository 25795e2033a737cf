"""SyntheticEvaluation: periodically train fresh networks on the synthetic set and log accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info

from lightning_dd.atomic import atomic_open
from lightning_dd.augment import check_strategy
from lightning_dd.classify import TrainSchedule
from lightning_dd.evaluation import EvalResult, apply_protocol, evaluate_full_set, evaluate_random_subsets, evaluate_repeats, format_table
from lightning_dd.export import image_grid
from lightning_dd.nets.spec import NetSpec
from lightning_dd.validation import COUNT, check_net_fits, check_numbers, defaults_of, fields_of


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

    Args:
        protocol: a named evaluation (:data:`~lightning_dd.evaluation.PROTOCOLS`): ``long``
            (ConvNet-3 w128, 300 epochs) or ``published`` (IDC's: ConvNet-3 w128, 1000 epochs);
            it fixes epochs, net and the training recipe, None leaves them to the fields below.
        every_n_outer: evaluate after every this many outer iterations (0: only at the end).
        repeats: networks trained per evaluation (different seeds); also random-subset draws.
        epochs: training epochs on the synthetic set (the paper's protocol uses 1000).
        net: evaluation network (None: the distillation network).
        batch_size, lr: SGD settings.
        augment: DSA transforms for evaluation training.
        cutmix_p: CutMix probability.
        spatial: ``single`` (the DSA/IDC evaluation code: colour and flip plus ONE of crop / scale /
            rotate per minibatch) or ``all`` (every listed transform on every minibatch).
        cutout_with_cutmix: keep ``cutout`` in ``augment`` although CutMix is on (the authors'
            code removes it).
        baselines: at the end, also evaluate random real subsets (``repeats`` draws) and the full set.
        full_set_epochs: epochs for the full-training-set row (0 skips that row).
        seed: base seed of evaluation networks (independent of distillation randomness).
        progress: show progress bars.
    """

    def __init__(
        self,
        protocol: str | None = None,
        every_n_outer: int = 0,
        repeats: int = 3,
        epochs: int = 1000,
        net: NetSpec | None = None,
        batch_size: int = 64,
        lr: float = 0.01,
        augment: str = "color_crop_flip_scale_rotate",
        cutmix_p: float = 0.5,
        spatial: str = "single",
        cutout_with_cutmix: bool = False,
        baselines: bool = True,
        full_set_epochs: int = 0,
        seed: int = 0,
        progress: bool = True,
    ) -> None:
        given = dict(epochs=epochs, net=net, lr=lr, batch_size=batch_size, augment=augment, cutmix_p=cutmix_p, spatial=spatial, cutout_with_cutmix=cutout_with_cutmix)
        settings = apply_protocol(protocol, given, defaults_of(type(self).__init__), "evaluation.")
        self.protocol, net, epochs = protocol, settings.pop("net"), settings["epochs"]
        self.every_n_outer, self.repeats, self.epochs, self.net = every_n_outer, repeats, epochs, net
        self.schedule = TrainSchedule(**settings)
        check_strategy("evaluation.augment", augment)
        self.schedule.augmentation()  # validates spatial before any training
        self.baselines, self.full_set_epochs, self.seed, self.progress = baselines, full_set_epochs, seed, progress
        self.history: list[tuple[int, EvalResult]] = []
        self.final_rows: list[EvalResult] = []

    needs_test_split = True  # the start-up checks then require the data's test split

    def check_settings(self) -> None:
        """Start-up check of the numbers (asked by :func:`~lightning_dd.preflight.preflight_fit`)."""
        values = {"every_n_outer": self.every_n_outer, "repeats": self.repeats, "full_set_epochs": self.full_set_epochs}
        values.update({k: v for k, v in fields_of(self.schedule).items() if k != "milestones"})
        check_numbers(values, "evaluation", rules={"epochs": COUNT}, defaults=defaults_of(type(self).__init__))

    def check_data(self, info) -> None:
        """Start-up check that the evaluation network fits the data's images."""
        if self.net is not None:
            check_net_fits(self.net, info.channels, info.num_classes, info.image_size, "evaluation.net")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int) -> None:
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
        rows = [result]
        if self.baselines:
            dm = trainer.datamodule
            net, val = self._net(pl_module), _val_split(dm)
            rows.append(evaluate_random_subsets(pl_module.hparams.ipc, dm.train_data, dm.test_data, net, self.schedule, self.repeats, self.seed, pl_module.device, self.progress, val))
            if self.full_set_epochs > 0:
                rows.append(evaluate_full_set(dm.train_data, dm.test_data, net, self.schedule, self.full_set_epochs, self.repeats, self.seed, pl_module.device, self.progress, val))
        self.final_rows = rows
        self._report(trainer, pl_module, rows)

    def _net(self, pl_module: pl.LightningModule) -> NetSpec:
        return self.net or pl_module.net_spec

    def _evaluate_synthetic(self, trainer: pl.Trainer, pl_module: pl.LightningModule, final: bool = False) -> EvalResult:
        """Train ``repeats`` networks on the set; during the run score on validation only when it exists (the test split is for the end)."""
        images, labels = pl_module.decoded()
        name = f"distilled, {pl_module.hparams.ipc}/class (x{pl_module.hparams.factor ** 2} decoded)"
        result = EvalResult(name)
        if trainer.is_global_zero:
            dm = trainer.datamodule
            val = _val_split(dm)
            score_on = dm.test_data if final or val is None else val
            result = evaluate_repeats(name, images, labels, score_on, self._net(pl_module), self.schedule, self.repeats, self.seed, pl_module.device, self.progress, val if final else None)
            if final or val is None:
                metrics = {"eval/acc_mean": result.mean, "eval/acc_std": result.std}
                if result.val_accuracies:
                    metrics["eval/val_acc_mean"] = result.val_mean
            else:  # scored on validation: the result's "test" column holds validation accuracy
                result = EvalResult(name, images=result.images, epochs=result.epochs, val_accuracies=result.accuracies)
                metrics = {"eval/val_acc_mean": result.val_mean}
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)
                if isinstance(logger, TensorBoardLogger):
                    stored, _ = pl_module.distilled()
                    logger.experiment.add_image("synthetic/images", image_grid(stored, pl_module.hparams.ipc), trainer.global_step)
            self.history.append((pl_module.outer, result))
            split, score = ("test", result.mean) if result.accuracies else ("validation", result.val_mean)
            rank_zero_info(f"lightning-dd: outer {pl_module.outer}: synthetic-set {split} accuracy {score:.2f} %")
        trainer.strategy.barrier("lightning_dd_eval")
        return result

    def _report(self, trainer: pl.Trainer, pl_module: pl.LightningModule, rows: list[EvalResult]) -> None:
        info = pl_module.info
        title = f"## {info.name}: ipc {pl_module.hparams.ipc}, factor {pl_module.hparams.factor}, {pl_module.hparams.model_source} nets, {pl_module.outer} outer x {pl_module.hparams.inner_loop} inner"
        table = format_table(rows, title)
        print("\n" + table + "\n", flush=True)
        metrics = {"eval/final_acc_mean": rows[0].mean, "eval/final_acc_std": rows[0].std}
        if rows[0].val_accuracies:
            metrics["eval/final_val_acc_mean"] = rows[0].val_mean
        if len(rows) > 1:
            metrics["eval/random_subset_acc_mean"] = rows[1].mean
        full = [r for r in rows if r.name == "full training set"]
        if full:
            metrics["eval/full_set_acc_mean"], metrics["eval/full_set_acc_std"] = full[0].mean, full[0].std
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
            if isinstance(logger, TensorBoardLogger):
                logger.log_hyperparams(_flat_hparams(pl_module.hparams), metrics)
        if trainer.log_dir:
            out = Path(trainer.log_dir)
            with atomic_open(out / "results.json", "w") as handle:
                json.dump({"rows": [r.to_dict() for r in rows], "history": [{"outer": o, **r.to_dict()} for o, r in self.history]}, handle, indent=2)
            with atomic_open(out / "results.md", "w") as handle:
                handle.write(table + "\n")


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
