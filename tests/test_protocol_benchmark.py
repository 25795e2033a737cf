"""benchmarks/protocol.py on tiny settings: variants differ only in their overrides, runs resume."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import protocol  # noqa: E402


def test_previous_reverts_every_setting_and_nothing_else():
    singles = [o for name, (_, overrides) in protocol.VARIANTS.items() if name not in ("paper", "previous", *protocol.LATER_VARIANTS) for o in overrides]
    assert protocol.VARIANTS["paper"][1] == [] and sorted(protocol.VARIANTS["previous"][1]) == sorted(singles)
    later = {o for _, overrides in protocol.LATER_VARIANTS.values() for o in overrides}
    assert later == {"model.mix_downsample=antialias", "model.net_whole_batches=false"} and not later & set(protocol.VARIANTS["previous"][1])
    assert {o.split("=")[0] for o in singles} >= {"model.net_batch_size", "model.net_spatial", "model.clamp", "model.image_step", "model.pool.batch_size"}


def test_summary_pairs_each_variant_with_paper_of_the_same_seed():
    rows = [
        {"variant": "paper", "seed": 0, "mean": 50.0, "fit_seconds": 10},
        {"variant": "paper", "seed": 1, "mean": 60.0, "fit_seconds": 10},
        {"variant": "clamp", "seed": 0, "mean": 51.0, "fit_seconds": 20},
        {"variant": "clamp", "seed": 1, "mean": 63.0, "fit_seconds": 20},
    ]
    table = protocol.summarise(rows, ["paper", "clamp"])
    # differences +1 and +3: mean +2, sample std sqrt(2)
    assert "| clamp | pixels clamped after every image step | 2 | 57.00 +- 8.49 | +2.00 +- 1.41 (n=2) | 20 |" in table
    assert "| paper | nothing: the authors' protocol | 2 | 55.00 +- 7.07 |  | 10 |" in table


@pytest.mark.slow
def test_tiny_study_runs_and_resumes(tmp_path, capsys):
    results = tmp_path / "runs.jsonl"
    argv = [
        "--config", "configs/digits/ipc1.yaml", "--variants", "paper", "image_step", "--seeds", "0", "--outer", "1",
        "--eval_epochs", "1", "--repeats", "1", "--set", "model.inner_loop=2", "--set", "model.net.width=4",
        "--set", "model.pool.size=1", "--set", "model.pool.epochs=0", "--results", str(results),
        "--pool_cache", str(tmp_path / "pools"), "--no_doc",
    ]
    protocol.main(argv)
    rows = protocol.read_results(results)
    assert sorted(r["variant"] for r in rows) == ["image_step", "paper"] and all(r["outer"] == 1 for r in rows)
    protocol.main(argv)  # everything is done: nothing runs again
    assert "2 run(s) already in" in capsys.readouterr().out and len(protocol.read_results(results)) == 2


def test_a_results_file_keeps_one_device(tmp_path):
    """Rows measured on CUDA and on the CPU must not be paired in one table."""
    results = tmp_path / "runs.jsonl"
    protocol.append_result(results, {"variant": "paper", "seed": 0, "mean": 50.0, "fit_seconds": 1, "device": "cuda"})
    with pytest.raises(SystemExit):
        protocol.main(["--config", "configs/digits/ipc1.yaml", "--variants", "paper", "--results", str(results), "--seeds", "0", "--no_doc"])


def test_the_table_names_where_the_runs_ran(tmp_path):
    """A table written later, elsewhere, still says on which machine its rows were measured."""
    results, doc = tmp_path / "runs.jsonl", tmp_path / "doc.md"
    for variant, mean in (("paper", 50.0), ("clamp", 51.0)):
        protocol.append_result(results, {"variant": variant, "seed": 0, "mean": mean, "fit_seconds": 1, "device": "cuda", "machine": "x86_64, 16 cores, GPU Test-GPU", "outer": 1, "inner_loop": 2})
    protocol.main(["--config", "configs/digits/ipc1.yaml", "--device", "cuda", "--variants", "paper", "clamp", "--seeds", "0", "--results", str(results), "--output", str(doc), "--note", "Written later."])
    text = doc.read_text()
    assert "<!-- protocol-ipc1-cuda:start -->" in text
    assert "Runs on x86_64, 16 cores, GPU Test-GPU. Written later." in text
    # A study with other overrides gets its own section and says what it overrode.
    protocol.main(["--config", "configs/digits/ipc1.yaml", "--device", "cuda", "--variants", "paper", "clamp", "--seeds", "0", "--results", str(results), "--output", str(doc), "--set", "model.net.width=4", "--section", "protocol-narrow"])
    text = doc.read_text()
    assert "<!-- protocol-narrow:start -->" in text and text.count("<!-- protocol-ipc1-cuda:start -->") == 1
    assert "Every run also sets `model.net.width=4`." in text.split("<!-- protocol-narrow:start -->")[1]
