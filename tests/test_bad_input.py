"""Bad input through the real ``lightning-dd`` command: one sentence, exit status 2, nothing started.

Each row is a mistake a user makes (from the families data folders, numbers, paths, checkpoints,
commands and trainer settings) and runs as its own process that executes exactly what the
``lightning-dd`` console script executes (``sys.argv`` set, :func:`lightning_dd.cli.main`, exit
status and uncaught tracebacks as the interpreter reports them). To keep the suite fast, one
driver process imports the package once and forks a fresh child per row; a few rows also go
through the installed console script itself.

Every row asserts exit status 2, no traceback, a last line that is one sentence naming the
problem, and that no pool pretraining or distillation started and no version folder was made.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import CLI_TINY

# Tiny settings on the bundled digits: a row that is wrongly accepted finishes in seconds.
TINY = [*CLI_TINY, "--model.pool.size=1", "--model.outer_iterations=1", "--model.inner_loop=1", "--model.batch_real=2", "--model.n_data=16",
        "--evaluation.epochs=1", "--evaluation.repeats=1", "--evaluation.every_n_outer=0", "--evaluation.baselines=false", "--evaluation.full_set_epochs=0"]  # fmt: skip
UNWRITABLE = "/proc/lightning-dd-test"  # cannot be created, not even by root


def fit(*extra: str) -> list[str]:
    """``fit`` with the tiny settings; {tmp} is the row's own folder (log root, pool cache)."""
    return ["fit", *TINY, "--trainer.default_root_dir={tmp}", "--model.pool.cache_dir={tmp}/pools", *extra]


def folder(name: str, *extra: str) -> list[str]:
    return fit(
        "--data.dataset=image_folder",
        f"--data.data_dir={{data}}/{name}",
        "--data.source_options={{image_size: 8}}",
        *extra,
    )


# (row id, command line, text the final sentence must contain)
ROWS = [
    # ---- commands and options
    ("validate-subcommand", ["validate"], "there is no 'validate' command"),
    ("test-subcommand", ["test", "--trainer.accelerator=cpu"], "there is no 'test' command"),
    ("predict-subcommand", ["predict"], "there is no 'predict' command"),
    ("command-typo", ["fitt"], "unknown command 'fitt'"),
    ("no-command", [], "a command is required"),
    ("optimizer-option", fit("--optimizer", "Adam"), "unknown option --optimizer"),
    ("lr-scheduler-option", fit("--lr_scheduler", "StepLR"), "unknown option --lr_scheduler"),
    ("option-typo", fit("--model.ipcc", "3"), "did you mean --model.ipc?"),
    ("config-key-typo", fit("--config", "{data}/typo.yaml"), "unknown setting model.ipcc (did you mean model.ipc?)"),
    ("nested-key-typo", fit("--model.net={{depth: 2, widht: 8}}"), "unknown setting model.net.widht"),
    ("config-missing", fit("--config", "{tmp}/missing.yaml"), "does not exist"),
    ("evaluate-missing-file", ["evaluate", "{tmp}/missing.pt"], "no distilled set at"),
    ("evaluate-foreign-file", ["evaluate", "{data}/garbage.ckpt"], "not a readable lightning-dd distilled set"),
    ("pool-option-typo", ["pool", "--sizee", "3"], "did you mean --size?"),
    ("export-folder-no-args", ["export-folder"], "export-folder"),
    # ---- numbers
    ("ipc-zero", fit("--model.ipc=0"), "model.ipc must be an integer >= 1, got 0"),
    ("ipc-not-a-number", fit("--model.ipc=abc"), "model.ipc expects an integer, got abc"),
    ("lr-img-negative", fit("--model.lr_img=-1"), "model.lr_img must be a finite number > 0"),
    ("lr-img-nan-in-yaml", fit("--config", "{data}/nan.yaml"), "model.lr_img must be a finite number > 0, got nan"),
    ("pool-lr-inf-in-yaml", fit("--config", "{data}/inf.yaml"), "model.pool.lr must be a finite number > 0, got inf"),
    (
        "every-n-outer-negative",
        fit("--evaluation.every_n_outer=-1"),
        "evaluation.every_n_outer must be an integer >= 0, got -1",
    ),
    ("evaluation-epochs-zero", fit("--evaluation.epochs=0"), "evaluation.epochs must be an integer >= 1"),
    ("evaluation-repeats-zero", fit("--evaluation.repeats=0"), "evaluation.repeats must be an integer >= 1"),
    ("cutmix-probability", fit("--model.net_cutmix_p=1.5"), "model.net_cutmix_p must be a finite number >= 0 and <= 1"),
    ("momentum-one", fit("--model.momentum_img=1.0"), "model.momentum_img must be a finite number >= 0 and < 1"),
    ("rho-range-empty", fit("--model.rho_min=0.5"), "model.rho_min=0.5 is larger than model.rho_max=0.09"),
    ("pool-batch-zero", fit("--model.pool.batch_size=0"), "model.pool.batch_size must be an integer >= 1"),
    ("net-width-zero", fit("--model.net.width=0"), "model.net.width must be an integer >= 1"),
    ("factor-too-large", fit("--model.factor=5"), "model.factor 5 cuts 8x8 images into 1-pixel tiles"),
    ("depth-5-on-8x8", fit("--model.net.depth=5"), "model.net.depth=5 shrinks 8x8 images to 1x1 feature maps"),
    ("depth-4-on-8x8", fit("--model.net.depth=4"), "use model.net.depth <= 3"),
    ("evaluation-resnet-on-8x8", fit("--evaluation.net={{name: resnet_ap, depth: 10}}"), "evaluation.net"),
    (
        "ipc-above-class-size",
        fit("--model.ipc=500"),
        "model.ipc=500 asks for more synthetic images per class than class",
    ),
    (
        "batch-real-above-class-size",
        fit("--model.batch_real=500"),
        "model.batch_real=500 is more than class '8' of 'digits' has training images (139)",
    ),
    (
        "batch-real-above-tiny-class",
        folder("two_classes", "--model.batch_real=64"),
        "so every class's real batch would have 5; use model.batch_real <= 5",
    ),
    ("eval-batch-size-zero", fit("--data.eval_batch_size=0"), "data.eval_batch_size must be an integer >= 1"),
    ("augment-typo", fit("--model.augment=color_crop_cutot"), "model.augment: unknown augmentation 'cutot'"),
    ("pool-augment-typo", fit("--model.pool.augment=color_crap"), "model.pool.augment: unknown augmentation 'crap'"),
    (
        "evaluation-augment-typo",
        fit("--evaluation.augment=color_crap"),
        "evaluation.augment: unknown augmentation 'crap'",
    ),
    ("trainer-precision", fit("--trainer.precision=99"), "trainer.precision expects one of"),
    ("trainer-devices-zero", fit("--trainer.devices=0"), "check the trainer.* settings"),
    ("evaluate-epochs-zero", ["evaluate", "{data}/set.pt", "--epochs", "0"], "--epochs must be an integer >= 1"),
    ("pool-size-zero", ["pool", "--size", "0", "--cache_dir", "{tmp}/pools"], "--size must be an integer >= 1"),
    # ---- data folders
    ("one-class-folder", folder("one_class"), "has 1 class"),
    ("missing-folder", folder("no_such_folder"), "does not exist"),
    ("data-dir-is-a-file", fit("--data.dataset=image_folder", "--data.data_dir={data}/garbage.ckpt"), "is a file"),
    ("empty-class-folder", folder("empty_class"), "contains no images"),
    ("corrupt-image", folder("corrupt"), "cannot read image"),
    ("class-smaller-than-ipc", folder("tiny", "--model.ipc=3"), "model.ipc=3 asks for more synthetic images per class"),
    ("empty-test-split", folder("tiny"), "test split"),
    (
        "unknown-source-option",
        fit(
            "--data.dataset=image_folder",
            "--data.data_dir={data}/two_classes",
            "--data.source_options={{imagesize: 8}}",
        ),
        "imagesize (did you mean image_size?)",
    ),
    (
        "source-option-on-digits",
        fit("--data.source_options={{image_size: 8}}"),
        "unknown data.source_options key(s) image_size for dataset 'digits'",
    ),
    ("source-options-not-a-mapping", fit("--data.source_options=abc"), "data.source_options expects a mapping"),
    ("unknown-dataset", fit("--data.dataset=imagenet-22k"), "unknown dataset 'imagenet-22k'"),
    ("mnist-files-missing", fit("--data.dataset=mnist", "--data.data_dir={tmp}/mnist"), "MNIST files not found"),
    # ---- paths
    ("pool-cache-unwritable", fit(f"--model.pool.cache_dir={UNWRITABLE}/pools"), "model.pool.cache_dir"),
    ("pool-cache-is-a-file", fit("--model.pool.cache_dir={data}/garbage.ckpt"), "is a file"),
    (
        "pool-cache-inside-a-file",
        fit("--model.pool.cache_dir={data}/garbage.ckpt/pools"),
        "cannot be created inside the file",
    ),
    ("export-dir-is-a-file", fit("--export.dirpath={data}/garbage.ckpt"), "export.dirpath"),
    ("interrupt-dir-unwritable", fit(f"--interrupt.dirpath={UNWRITABLE}"), "interrupt.dirpath"),
    (
        "log-root-unwritable",
        ["fit", *TINY, f"--trainer.default_root_dir={UNWRITABLE}", "--model.pool.cache_dir={tmp}/pools"],
        "trainer.default_root_dir",
    ),
    ("export-folder-unwritable", ["export-folder", "{data}/set.pt", f"{UNWRITABLE}/png"], "is not writable"),
    ("export-folder-exists", ["export-folder", "{data}/set.pt", "{data}"], "already exists"),
    ("pool-command-cache-is-a-file", ["pool", "--cache_dir", "{data}/garbage.ckpt"], "--cache_dir"),
    # ---- checkpoints
    ("checkpoint-missing", fit("--ckpt_path={tmp}/missing.ckpt"), "no checkpoint at"),
    ("checkpoint-is-a-folder", fit("--ckpt_path={data}"), "is a folder"),
    ("checkpoint-garbage", fit("--ckpt_path={data}/garbage.ckpt"), "not a readable checkpoint"),
    ("checkpoint-foreign", fit("--ckpt_path={data}/set.pt"), "not a checkpoint written by lightning-dd"),
    (
        "resume-with-other-ipc",
        fit("--ckpt_path={data}/ipc1.ckpt", "--model.ipc=3"),
        "model.ipc=3 differs from 1 in the checkpoint",
    ),
    (
        "resume-with-default-ipc",
        fit("--ckpt_path={data}/ipc1.ckpt", "--model.ipc=10"),
        "model.ipc=10 differs from 1 in the checkpoint",
    ),
    (
        "resume-with-other-metric",
        fit("--ckpt_path={data}/ipc1.ckpt", "--model.metric=l1"),
        "model.metric=l1 differs from mse",
    ),
    # A checkpoint from before net_whole_batches existed ran with exactly n_data images: it resumes so.
    (
        "resume-older-with-whole-batches",
        fit("--ckpt_path={data}/older.ckpt", "--model.net_whole_batches=true"),
        "model.net_whole_batches=True differs from False in the checkpoint",
    ),
    (
        "checkpoint-of-another-version",
        fit("--ckpt_path={data}/future.ckpt"),
        "holds settings this version of lightning-dd cannot read (unknown setting model.setting_of_the_future)",
    ),
    (
        "resume-with-other-dataset",
        fit("--ckpt_path={data}/ipc1.ckpt", "--data.dataset=mnist"),
        "data.dataset=mnist differs from digits",
    ),
    # ---- trainer
    ("accelerator-without-package", fit("--trainer.accelerator=tpu"), "not installed"),
]

# Rows that load data and build networks before they are refused (seconds each), run with the slow tests.
SLOW_ROWS = {"depth-4-on-8x8", "evaluation-resnet-on-8x8", "batch-real-above-class-size", "factor-too-large"}

# A few rows through the installed console script itself (each pays the full start-up).
CONSOLE_ROWS = {"validate-subcommand", "depth-5-on-8x8", "export-folder-unwritable"}

DRIVER = textwrap.dedent(
    r"""
    import json, os, signal, sys, time, traceback
    spec = json.load(open(sys.argv[1]))
    from lightning_dd.cli import main  # imported once; every row runs in its own forked process
    import contextlib, io
    import PIL.Image, sklearn.datasets, torch.utils.tensorboard, torchvision.datasets  # what the rows load lazily
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:  # builds the fit parser once, so its caches are inherited by every row
            main(["fit", "--print_config"])
        except SystemExit:
            pass
    results = {}
    for row in spec["rows"]:
        pid = os.fork()
        if pid == 0:  # the child: what the console script `lightning-dd` does, with its output in files
            code = 1
            try:
                os.chdir(row["cwd"])
                for fd, name in ((1, "stdout"), (2, "stderr")):
                    handle = os.open(row[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                    os.dup2(handle, fd)
                sys.argv = ["lightning-dd", *row["argv"]]
                main()
                code = 0
            except SystemExit as exit_:
                if isinstance(exit_.code, str):
                    print(exit_.code, file=sys.stderr)
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        deadline = time.time() + row["timeout"]
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                results[row["id"]] = os.waitstatus_to_exitcode(status)
                break
            if time.time() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                results[row["id"]] = "timed out"
                break
            time.sleep(0.02)
    json.dump(results, open(spec["results"], "w"))
    """
)


def _image(path: Path, seed: int) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def make_data(data: Path) -> None:
    """Shared inputs: image folders, config files, foreign files and a checkpoint."""
    from lightning_dd import DistillModule, NetSpec, PoolConfig, RealDataModule
    from lightning_dd.export import save_distilled

    for name, classes, per_class in (
        ("one_class", ["cat"], 6),
        ("two_classes", ["cat", "dog"], 6),
        ("tiny", ["cat", "dog"], 2),
    ):
        for c in classes:
            (data / name / c).mkdir(parents=True)
            for i in range(per_class):
                _image(data / name / c / f"{i}.png", i)
    for c in ("cat", "dog"):
        (data / "empty_class" / c).mkdir(parents=True)
        (data / "corrupt" / c).mkdir(parents=True)
        _image(data / "corrupt" / c / "0.png", 0)
    _image(data / "empty_class" / "cat" / "0.png", 0)
    (data / "corrupt" / "dog" / "1.png").write_bytes(b"not a png at all")
    (data / "typo.yaml").write_text("model:\n  ipcc: 3\n")
    (data / "nan.yaml").write_text("model:\n  lr_img: .nan\n")
    (data / "inf.yaml").write_text("model:\n  pool:\n    lr: .inf\n")
    (data / "garbage.ckpt").write_bytes(b"\x00 this is not a checkpoint")
    digits = RealDataModule("digits")
    train = digits.train_data
    idx = train.random_subset_indices(1, torch.Generator().manual_seed(0))
    save_distilled(data / "set.pt", train.images[idx].float() / 255, train.labels[idx], 1, digits.info, {})
    # A checkpoint of an IPC-1 run as Lightning writes it (hyper-parameters of both classes).
    module = DistillModule(
        ipc=1,
        factor=1,
        init="real",
        net=NetSpec(width=8, depth=2),
        pool=PoolConfig(size=1, epochs=1),
        outer_iterations=1,
        inner_loop=1,
        batch_real=2,
        n_data=16,
    )  # the settings of TINY
    checkpoint = {
        "lightning_dd": {"outer": 1, "inner": 0},
        "hyper_parameters": dict(module.hparams),
        "datamodule_hyper_parameters": dict(digits.hparams),
        "state_dict": {},
    }
    torch.save(checkpoint, data / "ipc1.ckpt")
    older = {
        k: v for k, v in checkpoint["hyper_parameters"].items() if k not in ("net_whole_batches", "mix_downsample")
    }
    torch.save({**checkpoint, "hyper_parameters": older}, data / "older.ckpt")  # written before those settings existed
    checkpoint["hyper_parameters"] = {**checkpoint["hyper_parameters"], "setting_of_the_future": 1}
    torch.save(checkpoint, data / "future.ckpt")


def _row_spec(row_id: str, argv: list[str], base: Path, data: Path) -> dict:
    tmp = base / "rows" / row_id
    tmp.mkdir(parents=True)
    argv = [a.format(tmp=tmp, data=data) for a in argv]
    return {
        "id": row_id,
        "argv": argv,
        "cwd": str(tmp),
        "stdout": str(base / "out" / f"{row_id}.out"),
        "stderr": str(base / "out" / f"{row_id}.err"),
        "timeout": 90,
    }


def run_rows(tmp_path_factory, row_ids: set[str]) -> tuple[dict, Path]:
    """Runs the given rows (one driver process, one forked child per row); id -> (code, out, err, dir)."""
    base = tmp_path_factory.mktemp("bad_input")
    data = base / "data"
    data.mkdir()
    (base / "out").mkdir()
    make_data(data)
    rows = [_row_spec(row_id, argv, base, data) for row_id, argv, _ in ROWS if row_id in row_ids]
    spec = {"rows": rows, "results": str(base / "results.json")}
    (base / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "LIGHTNING_DD_QUIET": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, str(base / "spec.json")], capture_output=True, text=True, timeout=900, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    codes = json.loads((base / "results.json").read_text())
    return {
        r["id"]: (codes[r["id"]], Path(r["stdout"]).read_text(), Path(r["stderr"]).read_text(), Path(r["cwd"]))
        for r in rows
    }, data


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    return run_rows(tmp_path_factory, {r for r, _, _ in ROWS} - SLOW_ROWS)


@pytest.fixture(scope="module")
def slow_outcomes(tmp_path_factory):
    return run_rows(tmp_path_factory, SLOW_ROWS)


def check_refused(code, out: str, err: str, row_dir: Path | None, expected: str) -> None:
    """Exit 2, no traceback, one final sentence containing ``expected``, nothing started or left."""
    assert "Traceback" not in out + err, err[-2000:]
    assert code == 2, (code, err[-2000:])
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "no message"
    last = lines[-1]
    assert last.startswith("lightning-dd: error: "), last
    sentence = last[len("lightning-dd: error: ") :]
    assert expected in sentence, (expected, sentence)
    assert not re.search(r"[.!?]\s+[A-Z]", sentence.replace("e.g. ", "")), f"more than one sentence: {sentence}"
    assert sum(line.startswith("lightning-dd: error:") for line in lines) == 1, lines
    assert "usage:" not in err, "the usage dump drowns the message"
    assert "early-stage pool of" not in out + err and "Restoring states" not in out + err  # nothing expensive started
    if row_dir is not None:
        assert not list(row_dir.glob("**/version_*")), "a version folder was left behind"
        assert not list(row_dir.glob("pools/*")), "a pool was written"


FAST = [(r, e) for r, _, e in ROWS if r not in SLOW_ROWS]
SLOW = [(r, e) for r, _, e in ROWS if r in SLOW_ROWS]


@pytest.mark.parametrize("row_id, expected", FAST, ids=[r for r, _ in FAST])
def test_bad_input_is_refused_in_one_sentence(outcomes, row_id, expected):
    results, _ = outcomes
    check_refused(*results[row_id], expected)


@pytest.mark.slow
@pytest.mark.parametrize("row_id, expected", SLOW, ids=[r for r, _ in SLOW])
def test_more_bad_input_is_refused_in_one_sentence(slow_outcomes, row_id, expected):
    results, _ = slow_outcomes
    check_refused(*results[row_id], expected)


@pytest.mark.slow
@pytest.mark.parametrize("row_id", sorted(CONSOLE_ROWS))
def test_console_script_gives_the_same_answer(outcomes, tmp_path, row_id):
    """The installed ``lightning-dd`` executable, not only the driver, answers as the table says."""
    results, data = outcomes
    script = shutil.which("lightning-dd") or str(Path(sys.executable).with_name("lightning-dd"))
    argv, expected = next((a, e) for r, a, e in ROWS if r == row_id)
    argv = [a.format(tmp=tmp_path, data=data) for a in argv]
    proc = subprocess.run(
        [script, *argv],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "LIGHTNING_DD_QUIET": "1"},
    )
    check_refused(proc.returncode, proc.stdout, proc.stderr, tmp_path, expected)
