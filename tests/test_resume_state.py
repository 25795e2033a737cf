"""Resume as Lightning state: the data module records its data in every checkpoint and refuses other data.

Lightning saves ``RealDataModule.state_dict()`` in checkpoints and calls ``load_state_dict`` when it
restores one, so the refusal reaches ``trainer.fit(..., ckpt_path=...)`` as well as
``lightning-dd fit --ckpt_path`` (which asks before the pool is pretrained).
"""

from __future__ import annotations

import functools
import re
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.cli import LightningCLI

import lightning_dd.data.sources as sources
from lightning_dd import RealDataModule
from lightning_dd.cli import DistillCLI, main
from lightning_dd.utils.errors import ConfigError

from helpers import make_trainer, tiny_distill

PACKAGE = Path(__file__).resolve().parents[1] / "lightning_dd"
OTHER_IMAGES = r"the training images of data\.dataset=digits differ from those the checkpoint"


def assert_one_sentence(text: str) -> None:
    assert "\n" not in text.strip() and not re.search(r"[.!?]\s+[A-Z]", text), text


def changed_images(dm: RealDataModule) -> RealDataModule:
    """``dm`` loaded, with one pixel of its training split changed (files edited under the same settings)."""
    images = dm.train_data.images.clone()
    images[0, 0, 0, 0] = 255 - images[0, 0, 0, 0]
    dm.train_data.images = images
    return dm


# ------------------------------------------------------------------ the data module alone
def test_the_data_module_state_round_trips_through_a_checkpoint_file(tmp_path, digits):
    state = digits.state_dict()
    assert {k: v for k, v in state.items() if k != "train_digest"} == {
        "dataset": "digits",
        "source_options": {},
        "val_per_class": 0,
        "val_seed": 0,
    }
    assert len(state["train_digest"]) == 16
    torch.save({"RealDataModule": state}, tmp_path / "x.ckpt")
    loaded = torch.load(tmp_path / "x.ckpt", weights_only=True)["RealDataModule"]  # plain values: no pickled objects
    again = RealDataModule("digits")
    again.load_state_dict(loaded)  # the same data is accepted
    assert again.state_dict() == state
    RealDataModule("digits", val_seed=5).load_state_dict(loaded)  # no validation split: its seed chose nothing


@pytest.mark.parametrize(
    "recorded, other, message",
    [
        ({}, {"val_per_class": 2}, r"data\.val_per_class=2 differs from 0 in the checkpoint"),
        (
            {"val_per_class": 2},
            {"val_per_class": 2, "val_seed": 1},
            r"data\.val_seed=1 differs from 0 in the checkpoint",
        ),
        (
            {},
            {"dataset": "mnist"},
            r"data\.dataset=mnist differs from digits in the checkpoint",
        ),  # refused before mnist is read
        ({}, {"source_options": {"split_seed": 1}}, r"data\.source_options=\{'split_seed': 1\} differs from \{\}"),
    ],
)
def test_other_data_settings_are_refused_in_one_sentence(digits, recorded, other, message):
    state = {**digits.state_dict(), **recorded}
    with pytest.raises(ConfigError, match=message) as refused:
        RealDataModule(**{"dataset": "digits", **other}).load_state_dict(state)
    assert_one_sentence(str(refused.value))


def test_changed_images_are_refused_and_an_older_record_is_compared_by_its_settings(digits):
    with pytest.raises(ConfigError, match=OTHER_IMAGES + " was distilled on") as refused:
        changed_images(RealDataModule("digits")).load_state_dict(digits.state_dict())
    assert_one_sentence(str(refused.value))
    older = {**dict(digits.hparams), "_instantiator": "x"}  # datamodule_hyper_parameters: no digest, no hashing
    changed_images(RealDataModule("digits")).check_resume(older)


# ------------------------------------------------------------------ trainer.fit(..., ckpt_path=...)
@pytest.fixture
def python_checkpoint(tmp_path, pool_dir) -> Path:
    """A one-step run on digits, checkpointed by Lightning's ModelCheckpoint."""
    make_trainer(default_root_dir=tmp_path / "run", enable_checkpointing=True).fit(
        tiny_distill(pool_dir, model_source="random", perturb=False), datamodule=RealDataModule("digits")
    )
    (path,) = (tmp_path / "run").rglob("*.ckpt")
    return path


def resume(path: Path, dm: RealDataModule, pool_dir: str, root: Path):
    module = tiny_distill(pool_dir, model_source="random", perturb=False, outer_iterations=2)
    make_trainer(default_root_dir=root).fit(module, datamodule=dm, ckpt_path=path)
    return module


def test_python_resume_refuses_other_data_in_one_sentence(python_checkpoint, pool_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sources._SOURCES, "digits_again", sources._SOURCES["digits"])  # another dataset that loads
    cases = [
        (RealDataModule("digits", val_per_class=2), r"data\.val_per_class=2 differs from 0 in the checkpoint"),
        (RealDataModule("digits_again"), r"data\.dataset=digits_again differs from digits in the checkpoint"),
        (changed_images(RealDataModule("digits")), OTHER_IMAGES),
    ]
    for dm, message in cases:
        with pytest.raises(ConfigError, match=message) as refused:
            resume(python_checkpoint, dm, pool_dir, tmp_path / "resumed")
        assert_one_sentence(str(refused.value))


def test_an_old_checkpoint_without_the_data_state_still_resumes(python_checkpoint, pool_dir, tmp_path):
    checkpoint = torch.load(python_checkpoint, weights_only=False)
    assert "RealDataModule" in checkpoint
    del checkpoint["RealDataModule"]
    torch.save(checkpoint, tmp_path / "old.ckpt")
    assert resume(tmp_path / "old.ckpt", RealDataModule("digits"), pool_dir, tmp_path / "resumed").outer == 2


# ------------------------------------------------------------------ lightning-dd fit --ckpt_path
RUN = [
    "--trainer.accelerator=cpu",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--evaluation.every_n_outer=0",
    "--evaluation.full_set_epochs=0",
    "--evaluation.baselines=false",
]
TINY = ["--model.ipc=1", "--model.factor=1", "--model.init=real", "--model.net.width=8", "--model.net.depth=2", "--model.model_source=random", "--model.perturb=false",
        "--model.outer_iterations=1", "--model.inner_loop=1", "--model.batch_real=8", "--model.n_data=0", "--model.tune_cpu_allocator=false", "--evaluation.epochs=1", "--evaluation.repeats=1"]  # fmt: skip


@pytest.fixture(scope="module")
def cli_checkpoint(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli_run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["lightning-dd"])  # LightningCLI warns when both sys.argv and args are given
        main(["fit", f"--trainer.default_root_dir={root}", *RUN, *TINY])
    (path,) = (root / "lightning_logs" / "version_0" / "checkpoints").glob("*.ckpt")
    return path


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--data.val_per_class=2"],
            r"data\.val_per_class=2 differs from 0 in the checkpoint .*\.ckpt; a resumed run must use the data it started on",
        ),
        (["--data.dataset=mnist"], r"data\.dataset=mnist differs from digits in the checkpoint"),
        (["changed-images"], OTHER_IMAGES + r" .*\.ckpt was distilled on"),
    ],
)
def test_cli_resume_refuses_other_data_in_one_sentence(cli_checkpoint, tmp_path, capsys, monkeypatch, extra, message):
    if extra == ["changed-images"]:  # the digits files "edited" between the run and its resume
        original = sources._SOURCES["digits"]

        @functools.wraps(original)
        def edited(**options):
            loaded = original(**options)
            loaded.train.images[0, 0, 0, 0] = 255 - loaded.train.images[0, 0, 0, 0]
            return loaded

        monkeypatch.setitem(sources._SOURCES, "digits", edited)
        extra = []
    monkeypatch.setattr(sys, "argv", ["lightning-dd"])
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", f"--trainer.default_root_dir={tmp_path}", *RUN, *extra, f"--ckpt_path={cli_checkpoint}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert re.search(message, last) and last.startswith("lightning-dd: error: "), err[-2000:]
    assert_one_sentence(last)
    assert "Restoring states" not in err and not list(tmp_path.rglob("version_*"))  # refused before trainer.fit


def test_the_cli_overrides_no_private_lightningcli_method():
    overridden = [
        name
        for name in vars(DistillCLI)
        if name.startswith("_") and not name.startswith("__") and hasattr(LightningCLI, name)
    ]
    assert overridden == []
    assert not [p for p in PACKAGE.rglob("*.py") if "def _parse_" in p.read_text()]
