"""Lightning's console messages that concern no setting of a lightning-dd run, and their filter.

Lightning prints cloud-service advertisements ("💡 Tip: ...", for litlogger and litmodels) on
every fit and a note on its own checkpoint-loading default on every resume. ``import
lightning_dd`` drops exactly these log records, so Python-API fits print what the command line
prints; every other message of Lightning goes through. The module imports nothing of the
library, so any module may use it.
"""

from __future__ import annotations

import logging
import re

NOISY_LOG_RECORDS = re.compile(r"💡 Tip:|`weights_only` was not set")
# The loggers Lightning emits them on: rank-zero messages (tips) and the checkpoint connector.
NOISY_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.trainer.connectors.checkpoint_connector",
)


class DropLightningNoise(logging.Filter):
    """Drops the log records that :data:`NOISY_LOG_RECORDS` matches."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not NOISY_LOG_RECORDS.search(record.getMessage())


def silence_lightning_tips() -> None:
    """Attach :class:`DropLightningNoise` to Lightning's loggers (once; later calls change nothing)."""
    for name in NOISY_LOGGERS:
        log = logging.getLogger(name)
        if not any(isinstance(f, DropLightningNoise) for f in log.filters):
            log.addFilter(DropLightningNoise())
