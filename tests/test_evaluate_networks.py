"""One report for several networks: rows by role, DD-Ranking scores, soft labels, timing, the recorded evaluation.

End to end through ``lightning_dd.cli.main`` on digits, plus the protocol of each row checked
with a stand-in for the training (fixed accuracies per kind of row), so that the scores can be
compared with values derived by hand.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import lightning_dd.evaluation as evaluation
import lightning_dd.teacher as teacher_module
from lightning_dd.callbacks.evaluation import SyntheticEvaluation
from lightning_dd.classify import TrainSchedule
from lightning_dd.cli import main
from lightning_dd.commands import recorded_evaluation
from lightning_dd.evaluation import EvalPlan, EvalResult, evaluate_network, format_table
from lightning_dd.export import save_distilled
from lightning_dd.nets import NetSpec
from lightning_dd.soft_labels import SoftLabeler

from helpers import fit, tiny_distill

NET = NetSpec(width=8, depth=2)
NETWORKS = "[{name: convnet, depth: 2, width: 8}, {name: resnet_ap, depth: 10, width: 8, norm: batch}]"
QUICK = ["--epochs", "2", "--repeats", "1", "--device", "cpu", "--progress", "false"]


def squash(x: float) -> float:
    return (math.exp(x) - math.exp(-1)) / (math.e - math.exp(-1))


@pytest.fixture
def export(tmp_path, digits):
    """A random real subset (2/class) of digits in the distilled-set format."""
    train = digits.train_data
    idx = train.random_subset_indices(2, torch.Generator().manual_seed(0))
    return save_distilled(
        tmp_path / "set.pt",
        train.images[idx].float() / 255,
        train.labels[idx],
        1,
        digits.info,
        {"model": {"net": NET.to_dict()}},
    )


def table_rows(out: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.strip("|").split("|")]
        for line in out.splitlines()
        if line.startswith("| ") and "---" not in line
    ][1:]


# ------------------------------------------------------------------------ end to end
def test_evaluate_several_networks_with_soft_labels_end_to_end(export, tmp_path, capsys):
    results = tmp_path / "out" / "results.json"
    teachers = tmp_path / "teachers"
    args = [
        "evaluate",
        str(export),
        "--networks",
        NETWORKS,
        "--soft_labels",
        "per_view",
        "--baselines",
        "true",
        "--scores",
        "true",
        "--full_set_epochs",
        "1",
    ]
    args += [
        "--teacher.epochs",
        "1",
        "--teacher.batch_size",
        "256",
        "--teacher.cache_dir",
        str(teachers),
        "--results",
        str(results),
        *QUICK,
    ]
    main(args)
    out = capsys.readouterr().out
    rows = table_rows(out)
    roles = [
        "distilled, 2/class",
        "random real, 2/class",
        "full training set",
        "distilled, 2/class, no augmentation",
        "random real, 2/class, no augmentation",
    ]
    roles += ["distilled, 2/class, soft labels (per view)", "random real, 2/class, soft labels (per view)"]
    assert [r[0] for r in rows] == roles * 2
    assert [r[1] for r in rows] == ["convnet depth 2 width 8"] * 7 + ["resnet_ap depth 10 width 8 (batch norm)"] * 7
    assert all(float(r[-1]) >= 0 for r in rows)  # seconds per network
    assert (
        "teacher convnet depth 2 width 8, trained and cached in" in out
        and len(list(teachers.glob("teacher-*.pt"))) == 1
    )
    assert (
        out.count("DD-Ranking scores (") == 2
        and "not computed" not in out
        and "evaluation time: convnet depth 2 width 8" in out
    )
    report = json.loads(results.read_text())
    assert [n["label"] for n in report["networks"]] == [
        "convnet depth 2 width 8",
        "resnet_ap depth 10 width 8 (batch norm)",
    ]
    for network in report["networks"]:
        acc = {row["role"]: row["mean"] / 100 for row in network["rows"]}
        values = network["scores"]["values"]
        # recomputed from the report's own accuracies with the definitions
        assert values["ior"] == pytest.approx(acc["set"] - acc["random"])
        assert values["hlr"] == pytest.approx(acc["full"] - acc["set"])
        assert values["lrs"] == pytest.approx(squash(0.5 * values["ior"] - 0.5 * values["hlr"]))
        assert values["ars"] == pytest.approx(
            squash(0.5 * (acc["set"] - acc["random"]) + 0.5 * (acc["set_plain"] - acc["random_plain"]))
        )
        assert values["soft_ior"] == pytest.approx(acc["set_soft"] - acc["random_soft"])
        assert network["seconds"] == pytest.approx(sum(sum(row["seconds"]) for row in network["rows"]))


def test_a_second_evaluation_loads_the_teacher_instead_of_training_it(export, tmp_path, capsys, monkeypatch):
    trained = []
    original = teacher_module.train_teacher
    monkeypatch.setattr(teacher_module, "train_teacher", lambda *a, **k: trained.append(1) or original(*a, **k))
    args = [
        "evaluate",
        str(export),
        "--soft_labels",
        "per_image",
        "--teacher.epochs",
        "1",
        "--teacher.batch_size",
        "256",
        "--teacher.cache_dir",
        str(tmp_path / "t"),
        *QUICK,
    ]
    main(args)
    assert "trained and cached in" in capsys.readouterr().out
    (cached,) = (tmp_path / "t").glob("teacher-*.pt")
    written = cached.stat().st_mtime_ns
    main(args)
    out = capsys.readouterr().out
    assert "loaded from the cache" in out and len(trained) == 1 and cached.stat().st_mtime_ns == written
    assert [r[0] for r in table_rows(out)] == [
        "distilled, 2/class",
        "distilled, 2/class, soft labels (per image)",
        "random real, 2/class, soft labels (per image)",
    ]
    assert (
        "soft IOR +" in out
        and "not computed: IOR: needs the random-real row (set --baselines true or --scores true)" in out
    )


# --------------------------------------------------------------------- the rows' protocol
# Accuracies (%) by kind of row: what a stand-in for training returns, so the scores are known.
ACCURACY = {
    ("set", True, False): 80.0,
    ("set", False, False): 60.0,
    ("random", True, False): 50.0,
    ("random", False, False): 40.0,
    ("full", True, False): 90.0,
    ("set", True, True): 85.0,
    ("random", True, True): 70.0,
}


def fake_splits(seen):
    """A stand-in for evaluate_splits: the kind of row from the images, augmentation from the schedule."""

    def run(images, labels, test, val, net, schedule, seed, device="cpu", progress=None, soft=None):
        kind = "set" if images.is_floating_point() else ("full" if images.shape[0] > 100 else "random")
        augmented = schedule.augment != "none" or schedule.cutmix_p > 0
        seen.append((kind, schedule.augment, schedule.cutmix_p, soft is not None, net))
        return {"test": ACCURACY[(kind, augmented, soft is not None)]}

    return run


def test_scores_of_a_network_from_rows_trained_under_one_protocol(digits, monkeypatch):
    """set 80 / 60 (plain) / 85 (soft), random 50 / 40 / 70, full 90 (%):
    IOR 0.30, HLR 0.10, LRS = squash(0.15 - 0.05) = 0.313687, ARS = squash(0.15 + 0.10) = 0.389783,
    soft IOR 0.15, soft LRS = squash(0.075 - 0.05) = 0.279712."""
    seen = []
    monkeypatch.setattr(evaluation, "evaluate_splits", fake_splits(seen))
    images = torch.rand(20, 1, 8, 8)
    labels = torch.arange(10).repeat(2)
    schedule = TrainSchedule(epochs=2, augment="color_crop", cutmix_p=0.5)
    plan = EvalPlan(repeats=2, full_set_epochs=1, scores=True, soft=SoftLabeler(torch.nn.Flatten(), "per_view"))
    report = evaluate_network(
        "set", images, labels, 2, digits.train_data, digits.test_data, NET, schedule, plan, seed=0, progress=False
    )
    assert [row.role for row in report.table_rows()] == [
        "set",
        "random",
        "full",
        "set_plain",
        "random_plain",
        "set_soft",
        "random_soft",
    ]
    assert len(seen) == 14 and {s[4] for s in seen} == {NET}
    plain = [s for s in seen if s[1] == "none"]
    assert len(plain) == 4 and all(s[2] == 0.0 and not s[3] for s in plain)  # set and random, two networks each
    assert all(
        s[1:3] == ("color_crop", 0.5) for s in seen if s[1] != "none"
    )  # every other row: the evaluation's schedule
    values = report.scores().values
    assert values["ior"] == pytest.approx(0.30) and values["hlr"] == pytest.approx(0.10)
    assert values["lrs"] == pytest.approx(0.313687, abs=1e-6)
    assert values["ars"] == pytest.approx(0.389783, abs=1e-6)
    assert values["soft_ior"] == pytest.approx(0.15) and values["soft_lrs"] == pytest.approx(0.279712, abs=1e-6)
    assert all(len(row.seconds) == 2 for row in report.table_rows())


def test_soft_labels_train_on_the_teachers_outputs(digits):
    """The same network, seed and views with hard and with soft labels ends with other weights; the teacher saw every minibatch."""
    calls = []
    teacher = NET.build_seeded(5, 1, 10, (8, 8))
    teacher.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    images, labels = torch.rand(20, 1, 8, 8), torch.arange(10).repeat(2)
    schedule = TrainSchedule(epochs=2, batch_size=8, augment="none", cutmix_p=0.0)
    built = []
    original = NetSpec.build_seeded
    try:
        NetSpec.build_seeded = lambda self, *a, **k: built.append(original(self, *a, **k)) or built[-1]
        hard = evaluation.evaluate_splits(images, labels, digits.test_data, None, NET, schedule, 0)
        soft = evaluation.evaluate_splits(
            images, labels, digits.test_data, None, NET, schedule, 0, soft=SoftLabeler(teacher, "per_view", 4.0)
        )
    finally:
        NetSpec.build_seeded = original
    assert calls == [8, 8, 4] * 2  # one teacher pass per minibatch of each of 2 epochs
    assert not torch.equal(built[0].classifier.weight, built[1].classifier.weight)
    assert set(hard) == set(soft) == {"test"}


# ---------------------------------------------------------------------------- callback
def test_callback_reports_scores_only_when_asked_and_logs_them(pool_dir, tmp_path, monkeypatch):
    import lightning as L

    from lightning_dd import RealDataModule

    seen = []
    monkeypatch.setattr(evaluation, "evaluate_splits", fake_splits(seen))
    default = SyntheticEvaluation(every_n_outer=0, repeats=1, epochs=2, augment="color", progress=False)
    fit(
        tiny_distill(pool_dir, ipc=2, model_source="random", perturb=False),
        callbacks=[default],
        default_root_dir=tmp_path / "default",
    )  # results files go there
    assert [r.role for r in default.final_rows] == ["set", "random"]  # no slower by default: no plain rows
    cb = SyntheticEvaluation(
        every_n_outer=0, repeats=1, epochs=2, augment="color", full_set_epochs=1, scores=True, progress=False
    )
    logger = L.pytorch.loggers.CSVLogger(tmp_path)
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        callbacks=[cb],
    )
    trainer.fit(
        tiny_distill(pool_dir, ipc=2, model_source="random", perturb=False), datamodule=RealDataModule("digits")
    )
    assert [r.role for r in cb.final_rows] == ["set", "random", "full", "set_plain", "random_plain"]
    results = json.loads((tmp_path / "lightning_logs" / "version_0" / "results.json").read_text())
    assert results["scores"]["values"]["ars"] == pytest.approx(squash(0.5 * 0.30 + 0.5 * 0.20))
    assert results["scores"]["values"]["lrs"] == pytest.approx(squash(0.5 * 0.30 - 0.5 * 0.10))
    metrics = (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"eval/ior", "eval/hlr", "eval/lrs", "eval/ars"} <= set(metrics)


# ------------------------------------------------------------------------------ report
def test_the_table_has_a_network_column_for_several_networks_and_seconds_per_network():
    rows = [
        EvalResult("distilled", [60.0, 70.0], images=10, epochs=5, seconds=[1.0, 3.0], net="convnet"),
        EvalResult("distilled", [50.0], images=10, epochs=5, seconds=[4.5], net="resnet_ap"),
    ]
    assert format_table(rows).splitlines() == [
        "| training set | network | images | epochs | nets | test accuracy (%) | seconds/net |",
        "|---|---|---:|---:|---:|---|---:|",
        "| distilled | convnet | 10 | 5 | 2 | 65.00 +- 7.07 | 2.00 |",
        "| distilled | resnet_ap | 10 | 5 | 1 | 50.00 +- 0.00 | 4.50 |",
    ]
    assert rows[0].to_dict()["seconds_mean"] == 2.0 and rows[0].to_dict()["net"] == "convnet"


# ------------------------------------------------------------------- recorded evaluation
def test_evaluate_uses_the_evaluation_recorded_with_the_set(tmp_path, digits, capsys):
    train = digits.train_data
    idx = train.random_subset_indices(1, torch.Generator().manual_seed(0))
    recorded = {
        "protocol": None,
        "net": NET.to_dict(),
        "epochs": 2,
        "repeats": 1,
        "batch_size": 16,
        "lr": 0.02,
        "augment": "none",
        "cutmix_p": 0.0,
        "spatial": "single",
        "cutout_with_cutmix": False,
    }
    config = {"model": {"net": NetSpec(width=16).to_dict()}, "evaluation": recorded}
    path = save_distilled(
        tmp_path / "set.pt", train.images[idx].float() / 255, train.labels[idx], 1, digits.info, config
    )
    main(["evaluate", str(path), "--device", "cpu", "--progress", "false"])
    captured = capsys.readouterr()
    assert "net convnet depth 2 width 8" in captured.out and table_rows(captured.out)[0][1:4] == ["10", "2", "1"]
    assert "settings recorded with the set" in captured.err
    main(["evaluate", str(path), "--epochs", "1", "--net.width", "4", "--device", "cpu", "--progress", "false"])
    out = capsys.readouterr().out  # flags override the recorded values field by field
    assert "net convnet depth 2 width 4" in out and table_rows(out)[0][1:4] == ["10", "1", "1"]


def test_recorded_evaluation_falls_back_and_skips_bad_values():
    assert recorded_evaluation({"model": {"net": {"width": 8}}}) == {}
    published = recorded_evaluation(
        {"evaluation": {"protocol": "published", "repeats": 5, "lr": "fast", "epochs": True}}
    )
    assert published == {"epochs": 1000, "net": NetSpec(depth=3, width=128, norm="instance"), "repeats": 5}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--soft_labels", "bogus"], "unknown --soft_labels mode 'bogus'; choose one of: per_image, per_view"),
        (["--networks", "[{{width: 8, depth: 2}}]", "--net.width", "4"], "--net and --networks were both given"),
        (["--networks", "[{{width: 8, depth: 4}}]"], "--networks[0].depth=4 shrinks 8x8 images"),
        (["--temperature", "0"], "--temperature must be a finite number > 0, got 0"),
        (["--teacher.epochs", "0"], "teacher.epochs must be an integer >= 1, got 0"),
        (
            ["--soft_labels", "per_view", "--teacher.checkpoint", "{tmp}/missing.pt"],
            "missing.pt is not a readable teacher file",
        ),
        (["--results", "{tmp}"], "is a folder; give a file path"),
    ],
)
def test_bad_settings_are_one_sentence(args, message, export, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(export), *[a.format(tmp=tmp_path) for a in args], *QUICK])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("lightning-dd: error: ") and message in err and err.count("\n") == 1, err


def test_the_callback_refuses_a_bad_soft_label_setting_before_the_run(tmp_path):
    from lightning_dd.utils.errors import ConfigError
    from lightning_dd.teacher import TeacherConfig

    with pytest.raises(ConfigError, match="unknown evaluation.soft_labels mode 'soft'"):
        SyntheticEvaluation(soft_labels="soft")
    with pytest.raises(ConfigError, match="evaluation.temperature must be a finite number > 0"):
        SyntheticEvaluation(soft_labels="per_view", temperature=-1.0).check_settings()
    missing = SyntheticEvaluation(soft_labels="per_view", teacher=TeacherConfig(checkpoint=str(tmp_path / "none.pt")))
    with pytest.raises(ConfigError, match="evaluation.teacher.checkpoint=.*none.pt is not a file"):
        missing.check_settings()
    SyntheticEvaluation(soft_labels="per_image", teacher=TeacherConfig(cache_dir=str(tmp_path / "t"))).check_settings()
