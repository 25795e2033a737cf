"""The ``lightning-dd`` command: LightningCLI for distillation.

``lightning-dd fit --config configs/digits/ipc10.yaml`` pretrains (or loads) the early-stage
pool, distils, evaluates and exports. Mistakes end with one sentence on stderr and exit status 2,
not a traceback, and everything that can be checked before pool pretraining and distillation
(numbers, folders, data, networks, resume settings) is checked before they start
(:mod:`lightning_dd.preflight`), so a bad setting never costs the expensive part of a run.

Only ``fit`` is offered: the module trains with its own optimiser and has no validation, test
or predict step, so LightningCLI's ``validate``/``test``/``predict`` subcommands and its
``--optimizer``/``--lr_scheduler`` options are left out.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import warnings
from argparse import RawDescriptionHelpFormatter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonargparse import DefaultHelpFormatter, Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lightning_dd.callbacks import DistilledExport, ProgressLog, SyntheticEvaluation
from lightning_dd.callbacks.interrupt import LOG_LOCATION_KEY, CheckpointOnInterrupt
from lightning_dd.commands import is_command, run_command, summary, user_error_in
from lightning_dd.data import RealDataModule
from lightning_dd.data.datamodule import check_same_data
from lightning_dd.distill import DistillModule
from lightning_dd.distill.checks import check_module_numbers
from lightning_dd.distill.pool import PoolConfig
from lightning_dd.evaluation import check_evaluation_numbers
from lightning_dd.utils.lightning_noise import silence_lightning_tips
from lightning_dd.utils.errors import ConfigError, FileFormatError, LightningDDError
from lightning_dd.utils.logger import DistillTensorBoardLogger
from lightning_dd.nets.spec import NetSpec
from lightning_dd.utils.parsing import FitParser, one_sentence
from lightning_dd.utils.progress import interactive, quiet
from lightning_dd.distill.resume import EARLIER_BEHAVIOUR, RESUME_SAFE, check_resume, flatten, load_checkpoint
from lightning_dd.preflight import preflight_fit
from lightning_dd.utils.validation import check_numbers, defaults_of, resolve_path

LOGGER_NAME = "lightning_logs"

# LightningCLI's other subcommands: they need steps DistillModule does not have.
LIGHTNING_ONLY = ("validate", "test", "predict")
# What the CLI keeps of a checkpoint it resumes (not its tensors): the settings, the data it
# distilled on (RealDataModule.state_dict; older checkpoints: the data hyper-parameters) and its log folder.
_RECORDS = ("hyper_parameters", RealDataModule.__qualname__, "datamodule_hyper_parameters", LOG_LOCATION_KEY)

# Warnings that say nothing about this run (the tips are lightning_noise's): a torch deprecation
# inside Lightning, and a hint about per-epoch logging (here one epoch is one outer iteration and
# steps are logged across epochs).
_NOISY_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",
    r"The number of training batches \(\d+\) is smaller than the logging interval",
)


def silence_lightning_noise() -> None:
    """Drop Lightning's tips and the warnings that print on every run but concern no setting of it."""
    silence_lightning_tips()
    for message in _NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")


class DistillCLI(LightningCLI):
    """LightningCLI for DistillModule: ``fit`` only, checked before it starts, resumable in place."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        given = kwargs.get("args")
        self._argv = (
            [str(a) for a in (sys.argv[1:] if given is None else given)]
            if not isinstance(given, (dict, Namespace))
            else []
        )
        self._resume_version: int | str | None = None
        self._resume: _Resume | None = None  # set by parse_arguments when --ckpt_path names a file
        super().__init__(*args, **kwargs)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {"fit": {"model", "train_dataloaders", "val_dataloaders", "datamodule"}}

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(SyntheticEvaluation, "evaluation")
        parser.add_lightning_class_args(DistilledExport, "export")
        parser.add_lightning_class_args(CheckpointOnInterrupt, "interrupt")
        parser.add_lightning_class_args(ProgressLog, "progress")
        fill_missing_help(
            parser,
            {
                "model": DistillModule,
                "model.net": NetSpec,
                "model.pool": PoolConfig,
                "evaluation": SyntheticEvaluation,
                "evaluation.net": NetSpec,
                "export": DistilledExport,
                "interrupt": CheckpointOnInterrupt,
                "progress": ProgressLog,
                "data": RealDataModule,
            },
        )

    # -------------------------------------------------------------- resume
    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse, then read a ``--ckpt_path`` checkpoint and keep the model settings the user gave.

        Right after this hook LightningCLI merges the checkpoint's settings into the config, after
        which a setting the user changed can no longer be told from the checkpoint's; what is kept
        here is compared in :meth:`before_instantiate_classes`. A missing, damaged or unreadable
        checkpoint is refused here, in one sentence, before LightningCLI reads it.
        """
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path or ckpt_path in ("last", "best", "hpc", "registry"):
            return
        checkpoint = load_checkpoint(ckpt_path)
        _check_mergeable(parser, self.config, subcommand, checkpoint, str(ckpt_path))
        given = _given_settings(parser, self.config, subcommand, self._argv)
        self._resume = _Resume(str(ckpt_path), {k: checkpoint[k] for k in _RECORDS if k in checkpoint}, given)

    def _apply_resume(self, config: Namespace) -> None:
        """Refuse other data or a changed setting (:func:`check_resume`), apply and announce the safe ones, keep the log folder."""
        resume = self._resume
        assert resume is not None
        self._resume_version = _resume_version(resume.records, resume.path, config.trainer.get("default_root_dir"))
        data = config.get("data")
        check_same_data(
            resume.data, data.as_dict() if isinstance(data, Namespace) else dict(data or {}), resume.where
        )  # settings only: other data may not even load
        saved = resume.records.get("hyper_parameters") or {}
        if saved:  # LightningCLI merged only what the checkpoint holds: the rest ran as it did then
            for key, value in EARLIER_BEHAVIOUR.items():
                if key not in saved:
                    config[f"model.{key}"] = value
        for key, (given, before) in check_resume(resume.given, resume.records, resume.where).items():
            config[f"model.{key}"] = given
            print(
                f"lightning-dd: resuming with model.{key}={given} instead of the checkpoint's {before} ({RESUME_SAFE[key]})",
                file=sys.stderr,
                flush=True,
            )

    # ------------------------------------------------------------- trainer
    def before_instantiate_classes(self) -> None:
        """The resume rule, then the numbers, before any class is built.

        The classes check some values themselves; these checks name every setting as the user
        spells it (model.pool.lr) and also catch NaN and infinity, which comparisons let through.
        """
        config = self.config[self.subcommand] if self.subcommand else self.config
        if self._resume is not None:
            self._apply_resume(config)
        model = config.get("model")
        if isinstance(model, Namespace):
            check_module_numbers(_scalars(model), "model", defaults_of(DistillModule.__init__))
            if isinstance(model.get("pool"), Namespace):
                PoolConfig.check_numbers(_scalars(model.pool), "model.pool")
            if isinstance(model.get("net"), Namespace):
                check_numbers(_scalars(model.net), "model.net")
        evaluation = config.get("evaluation")
        if isinstance(evaluation, Namespace):
            check_evaluation_numbers(_scalars(evaluation), "evaluation", defaults_of(SyntheticEvaluation.__init__))
        data = config.get("data")
        if isinstance(data, Namespace):
            check_numbers(_scalars(data), "data", defaults=defaults_of(RealDataModule.__init__))
        export = config.get("export")
        if isinstance(export, Namespace):
            check_numbers(_scalars(export), "export")

    def instantiate_trainer(self, **kwargs: Any):
        """Lightning's default logger, replaced by one that writes a single hparams summary and,
        when resuming, logs into the checkpoint's version folder."""
        trainer_config = self._get(self.config_init, "trainer", default={})
        if trainer_config.get("logger") in (None, True) and "logger" not in kwargs:
            root = trainer_config.get("default_root_dir") or os.getcwd()
            kwargs["logger"] = DistillTensorBoardLogger(root, name=LOGGER_NAME, version=self._resume_version)
        try:
            return super().instantiate_trainer(**kwargs)
        except ImportError as err:  # e.g. an accelerator whose package is missing (tpu without torch_xla)
            raise ConfigError(f"the trainer settings need a package that is not installed: {_sentence(err)}") from None

    def before_fit(self) -> None:
        """The start-up checks; when resuming, the training images' too, before the pool is pretrained.

        Lightning asks the data module the same when it loads the checkpoint
        (``RealDataModule.load_state_dict``), but only after the pool is built: asked here, a run
        on changed images stops before any expensive work.
        """
        preflight_fit(self.trainer, self.model, self.datamodule)
        if self._resume is not None:  # the data is loaded now: its images too
            self.datamodule.check_resume(self._resume.data, self._resume.where)
        self.model.validated = True

    def fit(self, model, **kwargs: Any) -> None:
        """``trainer.fit``; a run that fails with a user error leaves no empty version folder."""
        log_dir = _log_dir(self.trainer)
        existed = log_dir is None or log_dir.exists()
        root_existed = log_dir is None or log_dir.parent.exists()
        try:
            self.trainer.fit(model, **kwargs)
        except BaseException as err:
            if not existed and user_error_in(err) is not None:
                remove_if_empty(log_dir)
                if not root_existed and log_dir.parent.is_dir() and not any(log_dir.parent.iterdir()):
                    log_dir.parent.rmdir()
            raise


def fill_missing_help(parser, classes: dict[str, type]) -> None:
    """Give every option a help text, including those documented together in a docstring.

    Google-style docstrings often document related arguments on one line (``rho_min, rho_max:
    range of ...``), which the docstring parser does not split; such arguments would show no
    help at all. Their text is taken from that shared line.
    """
    texts = {prefix: _docstring_args(cls) for prefix, cls in classes.items()}
    for action in parser._actions:
        if action.help or not action.dest or "." not in action.dest:
            continue
        prefix, _, name = action.dest.rpartition(".")
        text = texts.get(prefix, {}).get(name)
        if text:
            action.help = text


def _docstring_args(cls: type) -> dict[str, str]:
    """Argument name -> text from the ``Args:`` section of a Google-style docstring."""
    import inspect

    doc = inspect.getdoc(cls) or ""
    out: dict[str, str] = {}
    in_args, names, text = False, [], []

    def flush() -> None:
        for n in names:
            out.setdefault(n, " ".join(text).strip())

    for line in doc.splitlines():
        if line.strip() in ("Args:", "Arguments:"):
            in_args = True
            continue
        if not in_args:
            continue
        if line and not line.startswith(" "):  # next section
            break
        entry = re.match(r"^ {4}([\w, ]+?):\s*(.*)$", line)
        if entry and not line.startswith("     "):
            flush()
            names = [n.strip() for n in entry.group(1).split(",") if n.strip()]
            text = [entry.group(2)]
        elif line.strip():
            text.append(line.strip())
    flush()
    return out


def check_checkpoint(path: str) -> None:
    """Raise FileFormatError unless ``path`` is a readable checkpoint written by DistillModule."""
    load_checkpoint(path)


def _scalars(section: Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(section).items() if not isinstance(v, (Namespace, dict, list))}


@dataclass
class _Resume:
    """What ``fit --ckpt_path`` keeps of the checkpoint it resumes, and the model settings the user gave.

    Attributes:
        path: the checkpoint, as given.
        records: its :data:`_RECORDS` entries (no tensors: a large run's checkpoint is not kept in memory).
        given: the ``model.*`` settings the user gave, flattened, before LightningCLI merged the checkpoint's.
    """

    path: str
    records: dict[str, Any]
    given: dict[str, Any]

    @property
    def where(self) -> str:
        """How a refusal names the checkpoint."""
        return f"the checkpoint {self.path}"

    @property
    def data(self) -> dict[str, Any]:
        """The data the checkpoint's run distilled on: the data module's state, else (older checkpoints) its hyper-parameters."""
        return dict(
            self.records.get(RealDataModule.__qualname__) or self.records.get("datamodule_hyper_parameters") or {}
        )


def _check_mergeable(
    parser: LightningArgumentParser, config: Namespace, subcommand: str, checkpoint: dict, ckpt_path: str
) -> None:
    """Refuse, in one sentence, a checkpoint whose settings LightningCLI could not merge into the config.

    LightningCLI's own merge would print the parser's message and "Parsing of ckpt_path
    hyperparameters failed!"; a checkpoint of another lightning-dd version (an unknown setting)
    deserves a sentence that says so. The trial merge is thrown away: LightningCLI makes its own.
    """
    hparams = {k: v for k, v in dict(checkpoint.get("hyper_parameters") or {}).items() if k != "_instantiator"}
    if "_class_path" in hparams:
        raise FileFormatError(
            f"{ckpt_path} names its module by class path (a LightningCLI in subclass mode wrote it), which lightning-dd fit cannot merge; resume it with trainer.fit(module, datamodule=..., ckpt_path=...)"
        )
    if not hparams:
        return
    previous, parser.exit_on_error = (
        parser.exit_on_error,
        False,
    )  # a failure here is the checkpoint's, not the command line's
    try:
        parser.parse_object({subcommand: {"model": hparams}}, config)
    except Exception as err:
        reason = one_sentence(str(err)).split(" (see ")[0]
        raise FileFormatError(
            f"{ckpt_path} holds settings this version of lightning-dd cannot read ({reason}); resume it with the version that wrote it"
        ) from None
    finally:
        parser.exit_on_error = previous


def _given_settings(
    parser: LightningArgumentParser, config: Namespace, subcommand: str, argv: list[str]
) -> dict[str, Any]:
    """The ``model.*`` settings the user gave, flattened: named on the command line, or unlike the defaults (a config file's).

    A setting left at its default is the checkpoint's once LightningCLI merged it, so only these
    can differ from the checkpoint's on purpose.
    """
    values = flatten(config[subcommand].get("model"))
    defaults = flatten(parser.parse_args([subcommand])[subcommand].get("model"))
    named = {a[len("--model.") :].split("=")[0] for a in argv if a.startswith("--model.")}
    missing = object()
    return {
        k: v
        for k, v in values.items()
        if v != defaults.get(k, missing) or any(k == n or k.startswith(n + ".") for n in named)
    }


def _resume_version(checkpoint: dict, ckpt_path: str, default_root_dir: str | None) -> int | str | None:
    """The version folder the checkpoint's run logged into, if it lies under this run's log root.

    Read from the record :class:`CheckpointOnInterrupt` puts into every checkpoint, or else
    from the checkpoint's own location (``<root>/lightning_logs/version_N/...``).
    """
    root = resolve_path(default_root_dir or os.getcwd()).resolve() / LOGGER_NAME
    record = checkpoint.get(LOG_LOCATION_KEY)
    if isinstance(record, dict) and record.get("log_dir") and record.get("version") is not None:
        if resolve_path(record["log_dir"]).resolve().parent == root:
            return record["version"]
    for parent in resolve_path(ckpt_path).resolve().parents:
        if parent.parent == root and re.fullmatch(r"version_\d+", parent.name):
            return int(parent.name.split("_")[1])
    return None


def _log_dir(trainer) -> Path | None:
    logger = trainer.logger
    if logger is None or not getattr(logger, "log_dir", None):
        return None
    return Path(logger.log_dir)


def remove_if_empty(log_dir: Path | None) -> None:
    """Remove a version folder that holds nothing but the run's config and hparams files."""
    if log_dir is None or not log_dir.is_dir():
        return
    entries = list(log_dir.iterdir())
    if all(
        p.is_file() and (p.name in ("config.yaml", "hparams.yaml") or p.name.startswith("events.out.tfevents."))
        for p in entries
    ):
        shutil.rmtree(log_dir, ignore_errors=True)


class _HelpFormatter(RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """Keeps the line breaks of the epilog that lists the standalone commands."""


# max_epochs=-1 here; DistillModule sets it to its outer_iterations (one epoch each) when fit starts.
# LIGHTNING_DD_QUIET=1 (CI) also hides Lightning's progress bar, and so does output to a file or
# pipe, where its redraws would pile up: ProgressLog writes plain lines there instead.
TRAINER_DEFAULTS = {
    "num_sanity_val_steps": 0,
    "log_every_n_steps": 10,
    "max_epochs": -1,
    "enable_progress_bar": not quiet() and interactive(),
}


def run_cli(args: list[str] | None = None, run: bool = True) -> DistillCLI:
    """Build (and by default run) the CLI; ``args`` replaces ``sys.argv[1:]`` (for tests)."""
    silence_lightning_noise()
    return DistillCLI(
        DistillModule,
        RealDataModule,
        seed_everything_default=0,
        trainer_defaults=TRAINER_DEFAULTS,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={
            "description": "Dataset distillation with Lightning: Acc-DD on IDC gradient matching (`lightning-dd fit --help` lists every setting).",
            "epilog": summary(),
            "formatter_class": _HelpFormatter,
        },
        parser_class=FitParser,
        auto_configure_optimizers=False,
        args=args,
        run=run,
    )


def _unknown_command(argv: list[str]) -> str | None:
    """A sentence for a missing or unknown first word (a subcommand is required)."""
    from lightning_dd.commands import COMMANDS

    choices = ["fit", *COMMANDS]
    if not argv:
        return f"a command is required; choose one of: {', '.join(choices)} (see lightning-dd --help)"
    first = argv[0]
    if first.startswith("-") or first in choices:
        return None
    if first in LIGHTNING_ONLY:
        return f"there is no {first!r} command: DistillModule has no {first} step (it trains synthetic images, not a classifier); measure a distilled set with `lightning-dd evaluate PATH.pt`"
    import difflib

    close = difflib.get_close_matches(first, choices, n=1)
    hint = f"did you mean {close[0]}?" if close else "see lightning-dd --help"
    return f"unknown command {first!r}; choose one of: {', '.join(choices)} ({hint})"


def main(args: list[str] | None = None) -> None:
    """Console entry point: a standalone command (evaluate, pool, export-folder) or ``fit``."""
    argv = list(sys.argv[1:] if args is None else args)
    try:
        problem = _unknown_command(argv)
        if problem:
            raise ConfigError(problem)
        if is_command(argv):
            silence_lightning_noise()
            run_command(argv)
        else:
            cli = run_cli(args)  # None: LightningCLI reads sys.argv itself
            stoppers = (
                [cb for cb in cli.trainer.callbacks if isinstance(cb, CheckpointOnInterrupt)] if cli.trainer else []
            )
            stopper = stoppers[0] if stoppers else None
            if stopper is not None and stopper.signal_received is not None:
                sys.exit(128 + int(stopper.signal_received))  # stopped early by a signal, checkpoint saved
    except LightningDDError as err:
        print(f"lightning-dd: error: {_sentence(err)}", file=sys.stderr)
        sys.exit(2)
    except MisconfigurationException as err:  # Lightning's own refusal of a trainer setting
        print(f"lightning-dd: error: {_sentence(err).rstrip('.!')} (check the trainer.* settings)", file=sys.stderr)
        sys.exit(2)
    except Exception as err:
        cause = user_error_in(err)
        if cause is None:
            raise
        print(f"lightning-dd: error: {_sentence(cause)}", file=sys.stderr)
        sys.exit(2)


def _sentence(err: BaseException) -> str:
    """The error's message as one sentence on one line (a library's "A. B." becomes "A; B")."""
    text = " ".join(str(err).split())
    text = re.sub(r"[.!]\s+(?=[A-Z`'\"])", "; ", text)
    return text or type(err).__name__


if __name__ == "__main__":
    main()
