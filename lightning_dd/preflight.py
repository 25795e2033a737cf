"""The start-up checks of a fit: every component of it is asked to check itself, before any work.

``lightning-dd fit`` and Python-API fits (``DistillModule.setup``) call :func:`preflight_fit`.
Components own their checks and are asked by duck typing, so this module imports none of them
(nothing below the CLI imports anything above it):

- ``check_settings()`` on the module, the data module and every callback: numbers and folders,
  without loading data;
- ``check_data(trainer, info, train, test)`` on the module and ``check_data(info)`` on callbacks:
  what depends on the data (class counts, the multi-formation factor and the networks against
  the image size, the multi-process settings);
- a callback with ``needs_test_split = True`` makes the test split required.

Resuming is checked by the module itself when the checkpoint is loaded
(:mod:`lightning_dd.distill.resume`), where the checkpoint is in hand.

The trainer's own folders (log directory, loggers, Lightning's ``ModelCheckpoint``) are checked
here. Each failure is one sentence naming the setting (:class:`~lightning_dd.utils.errors.LightningDDError`).
"""

from __future__ import annotations

from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_dd.utils.validation import check_writable_dir, resolve_path


def preflight_fit(trainer, module, datamodule) -> None:
    """Every check that can be made before ``trainer.fit`` starts pool pretraining or distillation.

    Loads the data once (``datamodule.setup`` is idempotent; fit reuses it).

    Raises:
        LightningDDError: the first problem found, as one sentence naming the setting and a fix.
    """
    callbacks = list(trainer.callbacks)
    module.check_settings()
    for cb in callbacks:
        if hasattr(cb, "check_settings"):
            cb.check_settings()
    if hasattr(datamodule, "check_settings"):
        datamodule.check_settings()

    check_writable_dir(trainer.default_root_dir, "trainer.default_root_dir")
    for logger in trainer.loggers:
        root = getattr(logger, "save_dir", None)
        if root and resolve_path(root).resolve() != resolve_path(trainer.default_root_dir).resolve():
            check_writable_dir(root, "trainer.logger's save_dir")
    for cb in callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.dirpath:
            check_writable_dir(cb.dirpath, "the ModelCheckpoint callback's dirpath")

    datamodule.setup("fit")
    info, train = datamodule.info, datamodule.train_data
    needs_test = any(getattr(cb, "needs_test_split", False) for cb in callbacks)
    test = getattr(datamodule, "test_data", None) if needs_test else None
    module.check_data(trainer, info, train, test)
    for cb in callbacks:
        if hasattr(cb, "check_data"):
            cb.check_data(info)
