"""The ``lightning-dd`` command: LightningCLI for distillation.

``lightning-dd fit --config configs/digits/ipc10.yaml`` pretrains (or loads) the early-stage
pool, distils, evaluates and exports. Mistakes in the configuration end with one sentence on
stderr and exit status 2, not a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from argparse import RawDescriptionHelpFormatter

import torch
from jsonargparse import DefaultHelpFormatter
from lightning.pytorch.cli import LightningCLI

from lightning_dd.callbacks import DistilledExport, SyntheticEvaluation
from lightning_dd.callbacks.interrupt import CheckpointOnInterrupt
from lightning_dd.commands import is_command, run_command, summary
from lightning_dd.data import RealDataModule
from lightning_dd.distill import DistillModule
from lightning_dd.errors import FileFormatError, LightningDDError
from lightning_dd.progress import quiet


class DistillCLI(LightningCLI):
    """LightningCLI with the evaluation and export callbacks as top-level config sections."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(SyntheticEvaluation, "evaluation")
        parser.add_lightning_class_args(DistilledExport, "export")
        parser.add_lightning_class_args(CheckpointOnInterrupt, "interrupt")

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads the checkpoint's hyper-parameters here, before anything else: refuse
        # a missing, truncated or foreign --ckpt_path with one sentence first.
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and ckpt_path not in ("last", "best", "hpc", "registry"):
            check_checkpoint(ckpt_path)
        super()._parse_ckpt_path()


def check_checkpoint(path: str) -> None:
    """Raise FileFormatError unless ``path`` is a readable checkpoint written by DistillModule."""
    if not Path(path).is_file():
        raise FileFormatError(f"no checkpoint at {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise FileFormatError(f"{path} is not a readable checkpoint (truncated or foreign file: {type(err).__name__})") from None
    if not isinstance(checkpoint, dict) or "lightning_dd" not in checkpoint:
        raise FileFormatError(f"{path} is not a checkpoint written by lightning-dd's DistillModule")


class _HelpFormatter(RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """Keeps the line breaks of the epilog that lists the standalone commands."""


# max_epochs=-1: DistillModule ends training after its outer_iterations (one epoch each).
# LIGHTNING_DD_QUIET=1 (CI) also hides Lightning's progress bar.
TRAINER_DEFAULTS = {"num_sanity_val_steps": 0, "log_every_n_steps": 10, "max_epochs": -1, "enable_progress_bar": not quiet()}


def run_cli(args: list[str] | None = None, run: bool = True) -> DistillCLI:
    """Build (and by default run) the CLI; ``args`` replaces ``sys.argv[1:]`` (for tests)."""
    return DistillCLI(
        DistillModule,
        RealDataModule,
        seed_everything_default=0,
        trainer_defaults=TRAINER_DEFAULTS,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"epilog": summary(), "formatter_class": _HelpFormatter},
        args=args,
        run=run,
    )


def main(args: list[str] | None = None) -> None:
    """Console entry point: a standalone command (evaluate, pool, export-folder) or LightningCLI."""
    argv = list(sys.argv[1:] if args is None else args)
    try:
        if is_command(argv):
            run_command(argv)
        else:
            cli = run_cli(args)
            stoppers = [cb for cb in cli.trainer.callbacks if isinstance(cb, CheckpointOnInterrupt)]
            stopper = stoppers[0] if stoppers else None
            if stopper is not None and stopper.signal_received is not None:
                sys.exit(128 + int(stopper.signal_received))  # stopped early by a signal, checkpoint saved
    except LightningDDError as err:
        print(f"lightning-dd: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
