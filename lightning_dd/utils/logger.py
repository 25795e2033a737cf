"""DistillTensorBoardLogger: TensorBoard logging with one hparams summary per run.

Lightning's TensorBoardLogger writes an hparams summary when training starts (with a
placeholder ``hp_metric = -1``) and another one whenever ``log_hyperparams`` is called with
metrics, so TensorBoard's HPARAMS tab showed two sessions per run: one with the settings and no
result, one with the result. This logger remembers the settings it is given (the module's and
the datamodule's hyper-parameters: dataset, network, schedule) and writes a single summary, once
the final accuracy is known, holding all of them with that accuracy as the metric.
"""

from __future__ import annotations

from argparse import Namespace
from typing import Any

from lightning.fabric.utilities.logger import _convert_params
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only


class DistillTensorBoardLogger(TensorBoardLogger):
    """A TensorBoardLogger whose hparams summary appears once, with the run's settings and result.

    ``log_hyperparams(params)`` without metrics only records ``params`` (they still go to
    ``hparams.yaml``); ``log_hyperparams(params, metrics)`` writes the summary with everything
    recorded so far plus ``params``, and logs ``metrics`` at the last step seen. Arguments are
    those of :class:`~lightning.pytorch.loggers.TensorBoardLogger` (``default_hp_metric`` is off).

    Example:
        >>> logger = DistillTensorBoardLogger("runs", version=3)   # runs/lightning_logs/version_3
    """

    def __init__(
        self, save_dir: str, name: str | None = "lightning_logs", version: int | str | None = None, **kwargs: Any
    ) -> None:
        kwargs.setdefault("default_hp_metric", False)
        super().__init__(save_dir, name=name, version=version, **kwargs)
        self._settings: dict[str, Any] = {}
        self._last_step: int | None = None

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if step is not None:
            self._last_step = step if self._last_step is None else max(self._last_step, step)
        super().log_metrics(metrics, step)

    @rank_zero_only
    def log_hyperparams(
        self, params: dict[str, Any] | Namespace, metrics: dict[str, Any] | None = None, step: int | None = None
    ) -> None:
        params = dict(_convert_params(params) or {})
        # "_instantiator" and similar private entries are LightningCLI's bookkeeping, not settings.
        self._settings.update({k: v for k, v in params.items() if not str(k).startswith("_")})
        if metrics is None:
            super().log_hyperparams(params, None, step)  # recorded for hparams.yaml; no summary yet
            return
        super().log_hyperparams(dict(self._settings), metrics, self._last_step if step is None else step)
