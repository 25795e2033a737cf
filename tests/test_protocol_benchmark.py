"""benchmarks.protocol on tiny settings: variants differ only in their overrides, runs resume."""

from __future__ import annotations

import pytest

from benchmarks import protocol
from lightning_dd.set_format import load_distilled
from benchmarks.runner import ResultStore


def rows_of(path):
    return ResultStore(path, ("variant", "seed")).rows()


def add_row(path, row):
    ResultStore(path, ("variant", "seed")).add(row)


def test_previous_reverts_every_setting_and_nothing_else():
    # lightning-dd's earlier protocol, setting by setting, as its recorded runs used it.
    earlier = {
        "net_batch": ["model.net_batch_size=128"],
        "net_augment": ["model.net_spatial=all", "model.net_cutout_with_cutmix=true"],
        "pool": [
            "model.pool.batch_size=128",
            "model.pool.augment=color_crop_cutout_scale_rotate",
            "model.pool.spatial=all",
            "model.pool.cutout_with_cutmix=true",
        ],
        "clamp": ["model.clamp=per_step"],
        "image_step": ["model.image_step=per_iteration"],
    }
    previous = [
        "model.net_batch_size=128",
        "model.net_spatial=all",
        "model.net_cutout_with_cutmix=true",
        "model.pool.batch_size=128",
        "model.pool.augment=color_crop_cutout_scale_rotate",
        "model.pool.spatial=all",
        "model.pool.cutout_with_cutmix=true",
        "model.clamp=per_step",
        "model.image_step=per_iteration",
    ]
    # Found later: not part of previous, whose recorded runs predate them.
    later = {
        "mix_downsample": ["model.mix_downsample=antialias"],
        "net_whole_batches": ["model.net_whole_batches=false"],
    }
    assert {name: overrides for name, (_, overrides) in protocol.VARIANTS.items()} == {
        "paper": [],
        **earlier,
        "previous": previous,
        **later,
    }
    assert {name: overrides for name, (_, overrides) in protocol.LATER_VARIANTS.items()} == later


def test_summary_pairs_each_variant_with_paper_of_the_same_seed():
    rows = [
        {"variant": "paper", "seed": 0, "mean": 50.0, "fit_seconds": 10, "outer": 4, "inner_loop": 5},
        {"variant": "paper", "seed": 1, "mean": 60.0, "fit_seconds": 10, "outer": 4, "inner_loop": 5},
        {"variant": "clamp", "seed": 0, "mean": 51.0, "fit_seconds": 20, "outer": 4, "inner_loop": 5},
        {"variant": "clamp", "seed": 1, "mean": 63.0, "fit_seconds": 20, "outer": 4, "inner_loop": 5},
    ]
    table = protocol.summarise(rows, ["paper", "clamp"])
    # differences +1 and +3: mean +2, sample std sqrt(2); 4 x 5 = 20 matching steps
    assert (
        "| clamp | pixels clamped after every image step | 2 | 20 | 57.00 +- 8.49 | +2.00 +- 1.41 (n=2) | 20 |" in table
    )
    assert "| paper | nothing: the authors' protocol | 2 | 20 | 55.00 +- 7.07 |  | 10 |" in table
    assert "random real" not in table


def test_summary_measures_candidates_against_random_real_of_the_same_seed():
    rows = [
        {"variant": "paper", "seed": 0, "mean": 50.0, "fit_seconds": 10, "outer": 4, "inner_loop": 5},
        {"variant": "wide", "seed": 0, "mean": 58.0, "fit_seconds": 30, "outer": 2, "inner_loop": 5},
        {"variant": "wide", "seed": 1, "mean": 54.0, "fit_seconds": 30, "outer": 2, "inner_loop": 5},
        {"variant": protocol.RANDOM_REAL, "seed": 0, "mean": 52.0, "fit_seconds": 0, "outer": 0, "inner_loop": 0},
        {"variant": protocol.RANDOM_REAL, "seed": 1, "mean": 51.0, "fit_seconds": 0, "outer": 0, "inner_loop": 0},
    ]
    table = protocol.summarise(rows, ["paper", "wide", protocol.RANDOM_REAL], {"wide": "`model.net.width=8`"})
    # wide vs random real: +6 (seed 0) and +3 (seed 1): mean 4.5, std sqrt(4.5); vs paper only seed 0 pairs: +8
    assert (
        "| wide | `model.net.width=8` | 2 | 10 | 56.00 +- 2.83 | +8.00 +- 0.00 (n=1) | +4.50 +- 2.12 (n=2) | 30 |"
        in table
    )
    assert "| paper | nothing: the authors' protocol | 1 | 20 | 50.00 +- 0.00 |  | -2.00 +- 0.00 (n=1) | 10 |" in table
    assert (
        f"| {protocol.RANDOM_REAL} | random real images, same storage (the bar) | 2 |  | 51.50 +- 0.71 |  |  | 0 |"
        in table
    )


def test_candidates_parse_into_named_overrides():
    assert protocol.parse_candidate("idc_i=model.factor=1;model.init=real") == (
        "idc_i",
        ["model.factor=1", "model.init=real"],
    )
    for bad in ("noequals", "=model.factor=1", "paper=model.factor=1", "empty="):
        with pytest.raises(Exception):
            protocol.parse_candidate(bad)


@pytest.mark.slow
def test_tiny_study_runs_and_resumes(tmp_path, capsys):
    results = tmp_path / "runs.jsonl"
    argv = [
        "--config",
        "configs/digits/ipc1.yaml",
        "--variants",
        "paper",
        "image_step",
        "--seeds",
        "0",
        "--outer",
        "1",
        "--eval_epochs",
        "1",
        "--repeats",
        "1",
        "--set",
        "model.inner_loop=2",
        "--set",
        "model.net.width=4",
        "--set",
        "model.pool.size=1",
        "--set",
        "model.pool.epochs=0",
        "--results",
        str(results),
        "--pool_cache",
        str(tmp_path / "pools"),
        "--no_doc",
        "--save_sets",
        str(tmp_path / "sets"),
    ]
    protocol.main(argv)
    rows = rows_of(results)
    assert sorted(r["variant"] for r in rows) == ["image_step", "paper"] and all(r["outer"] == 1 for r in rows)
    saved = load_distilled(tmp_path / "sets" / "paper-seed0.pt")  # the set itself is kept, with what made it
    assert (
        saved.images.shape == (10, 1, 8, 8)
        and saved.config["model"]["inner_loop"] == 2
        and saved.config["evaluation"]["epochs"] == 300
    )
    protocol.main(argv)  # everything is done: nothing runs again
    assert "2 run(s) already in" in capsys.readouterr().out and len(rows_of(results)) == 2


@pytest.mark.slow
def test_candidates_set_their_own_iterations_and_random_real_is_evaluated(tmp_path):
    results = tmp_path / "runs.jsonl"
    protocol.main([
        "--config", "configs/digits/ipc1.yaml", "--variants", "paper", "--candidate", "longer=model.outer_iterations=2", "--random_real", "--seeds", "0",
        "--outer", "1", "--eval_epochs", "1", "--repeats", "1", "--set", "model.inner_loop=1", "--set", "model.net.width=4",
        "--set", "model.pool.size=1", "--set", "model.pool.epochs=0", "--results", str(results),
        "--pool_cache", str(tmp_path / "pools"), "--no_doc",
    ])  # fmt: skip
    rows = {r["variant"]: r for r in rows_of(results)}
    assert sorted(rows) == ["longer", "paper", protocol.RANDOM_REAL]
    assert (rows["paper"]["outer"], rows["longer"]["outer"], rows[protocol.RANDOM_REAL]["outer"]) == (1, 2, 0)
    assert len(rows[protocol.RANDOM_REAL]["accuracies"]) == 1
    assert (rows["paper"]["steps"], rows["longer"]["steps"]) == (1, 2)  # outer x inner_loop of 1


@pytest.mark.slow
def test_candidates_alone_leave_paper_out_and_a_time_limit_stops_a_fit(tmp_path):
    results = tmp_path / "runs.jsonl"
    protocol.main([
        "--config", "configs/digits/ipc1.yaml", "--candidate", "long=model.outer_iterations=100000", "--max_minutes", "0.05",
        "--seeds", "0", "--eval_epochs", "1", "--repeats", "1", "--set", "model.inner_loop=1", "--set", "model.net.width=4",
        "--set", "model.pool.size=1", "--set", "model.pool.epochs=0", "--results", str(results),
        "--pool_cache", str(tmp_path / "pools"), "--no_doc",
    ])  # fmt: skip
    (row,) = rows_of(results)
    assert row["variant"] == "long" and 0 < row["steps"] < 100000 and row["fit_seconds"] < 60


def test_a_results_file_keeps_one_device(tmp_path):
    """Rows measured on CUDA and on the CPU must not be paired in one table."""
    results = tmp_path / "runs.jsonl"
    add_row(results, {"variant": "paper", "seed": 0, "mean": 50.0, "fit_seconds": 1, "device": "cuda"})
    with pytest.raises(SystemExit):
        protocol.main(
            [
                "--config",
                "configs/digits/ipc1.yaml",
                "--variants",
                "paper",
                "--results",
                str(results),
                "--seeds",
                "0",
                "--no_doc",
            ]
        )


def test_the_table_names_where_the_runs_ran(tmp_path):
    """A table written later, elsewhere, still says on which machine its rows were measured."""
    results, doc = tmp_path / "runs.jsonl", tmp_path / "doc.md"
    for variant, mean in (("paper", 50.0), ("clamp", 51.0)):
        add_row(
            results,
            {
                "variant": variant,
                "seed": 0,
                "mean": mean,
                "fit_seconds": 1,
                "device": "cuda",
                "machine": "x86_64, 16 cores, GPU Test-GPU",
                "outer": 1,
                "inner_loop": 2,
            },
        )
    protocol.main(
        [
            "--config",
            "configs/digits/ipc1.yaml",
            "--device",
            "cuda",
            "--variants",
            "paper",
            "clamp",
            "--seeds",
            "0",
            "--results",
            str(results),
            "--output",
            str(doc),
            "--note",
            "Written later.",
        ]
    )
    text = doc.read_text()
    assert "<!-- protocol-ipc1-cuda:start -->" in text
    assert "Runs on x86_64, 16 cores, GPU Test-GPU. Written later." in text
    # A study with other overrides gets its own section and says what it overrode.
    protocol.main(
        [
            "--config",
            "configs/digits/ipc1.yaml",
            "--device",
            "cuda",
            "--variants",
            "paper",
            "clamp",
            "--seeds",
            "0",
            "--results",
            str(results),
            "--output",
            str(doc),
            "--set",
            "model.net.width=4",
            "--section",
            "protocol-narrow",
        ]
    )
    text = doc.read_text()
    assert "<!-- protocol-narrow:start -->" in text and text.count("<!-- protocol-ipc1-cuda:start -->") == 1
    assert "Every run also sets `model.net.width=4`." in text.split("<!-- protocol-narrow:start -->")[1]
    # A candidate study's heading names its seeds: two studies of one config stay apart.
    add_row(
        results,
        {"variant": "cand", "seed": 1, "mean": 52.0, "fit_seconds": 1, "device": "cuda", "outer": 1, "inner_loop": 2},
    )
    protocol.main(
        [
            "--config",
            "configs/digits/ipc1.yaml",
            "--device",
            "cuda",
            "--candidate",
            "cand=model.lr_img=0.03",
            "--seeds",
            "1",
            "--results",
            str(results),
            "--output",
            str(doc),
            "--section",
            "cand",
        ]
    )
    assert "### Candidates, ipc1.yaml, seed 1\n" in doc.read_text()


def test_the_choice_is_made_on_validation_and_test_is_shown_for_the_chosen_one():
    """``lucky`` wins on test (+4 points) but loses on validation (-1): ``paper`` is chosen, and ``lucky``'s test figure is marked as read after the choice."""
    rows = [
        {"variant": "paper", "seed": 0, "mean": 70.0, "val_mean": 72.0, "fit_seconds": 10, "outer": 4, "inner_loop": 5},
        {"variant": "paper", "seed": 1, "mean": 72.0, "val_mean": 74.0, "fit_seconds": 10, "outer": 4, "inner_loop": 5},
        {"variant": "lucky", "seed": 0, "mean": 74.0, "val_mean": 71.0, "fit_seconds": 10, "outer": 4, "inner_loop": 5},
        {"variant": "lucky", "seed": 1, "mean": 76.0, "val_mean": 73.0, "fit_seconds": 10, "outer": 4, "inner_loop": 5},
        {
            "variant": protocol.RANDOM_REAL,
            "seed": 0,
            "mean": 60.0,
            "val_mean": 61.0,
            "fit_seconds": 0,
            "outer": 0,
            "inner_loop": 0,
        },
        {
            "variant": protocol.RANDOM_REAL,
            "seed": 1,
            "mean": 62.0,
            "val_mean": 63.0,
            "fit_seconds": 0,
            "outer": 0,
            "inner_loop": 0,
        },
    ]
    variants = ["paper", "lucky", protocol.RANDOM_REAL]
    assert protocol.chosen_variant(rows, variants) == "paper"
    table = protocol.summarise(rows, variants, {"lucky": "wins on test"})
    assert "validation accuracy (%)" in table and "test accuracy (%)" in table
    # paper: validation 73 +- 1.41, +11 over random real on validation at both seeds, test 71 +- 1.41 chosen
    assert (
        "| paper | nothing: the authors' protocol | 2 | 20 | 73.00 +- 1.41 |  | +11.00 +- 0.00 (n=2) | **71.00 +- 1.41** (chosen) | 10 |"
        in table
    )
    assert (
        "| lucky | wins on test | 2 | 20 | 72.00 +- 1.41 | -1.00 +- 0.00 (n=2) | +10.00 +- 0.00 (n=2) | 75.00 +- 1.41 (read after the choice) | 10 |"
        in table
    )
    # a run without a validation score: nothing is chosen, and the table compares test accuracy as before
    assert protocol.chosen_variant([*rows[:3], {**rows[3], "val_mean": None}], variants) is None
