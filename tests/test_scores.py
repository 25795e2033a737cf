"""DD-Ranking's scores against values derived by hand from fixed accuracies (fractions).

Every expected number below is worked out on paper from the definitions (DD-Ranking, Li et al.
2025), with ``squash(x) = (e^x - e^-1) / (e - e^-1)`` and ``e - e^-1 = 2.350402387...``:

    squash(-0.05)  = (0.951229 - 0.367879) / 2.350402 = 0.248192
    squash(0.10)   = (1.105171 - 0.367879) / 2.350402 = 0.313687
    squash(-0.20)  = (0.818731 - 0.367879) / 2.350402 = 0.191819
    squash(0.125)  = (1.133148 - 0.367879) / 2.350402 = 0.325591
    squash(0.25)   = (1.284025 - 0.367879) / 2.350402 = 0.389783
    squash(0.025)  = (1.025315 - 0.367879) / 2.350402 = 0.279712
"""

from __future__ import annotations

import pytest

from lightning_dd.evaluation import EvalResult
from lightning_dd.scores import (
    augmentation_robust_score,
    dd_scores,
    hard_label_recovery,
    improvement_over_random,
    label_robust_score,
    squash,
)


def test_lrs_with_a_negative_alpha():
    """set 0.60, random 0.40, full 0.90: IOR 0.20, HLR 0.30, alpha = 0.10 - 0.15 = -0.05."""
    ior = improvement_over_random(0.60, 0.40)
    hlr = hard_label_recovery(0.90, 0.60)
    assert ior == pytest.approx(0.20) and hlr == pytest.approx(0.30)
    assert label_robust_score(ior, hlr) == pytest.approx(0.248192, abs=1e-6)


def test_ior_is_set_minus_random_and_hlr_full_minus_set():
    """The signs: a set below random real has a negative IOR; a set below the full data a positive HLR."""
    assert improvement_over_random(0.30, 0.45) == pytest.approx(-0.15)
    assert hard_label_recovery(0.95, 0.70) == pytest.approx(0.25)


def test_lrs_weights_ior_by_w_and_hlr_by_one_minus_w():
    """w = 0.8, IOR 0.2, HLR 0.3: alpha = 0.16 - 0.06 = 0.10 (swapped weights would give 0.04 - 0.24 = -0.20)."""
    assert label_robust_score(0.2, 0.3, w=0.8) == pytest.approx(0.313687, abs=1e-6)
    assert label_robust_score(0.2, 0.3, w=0.2) == pytest.approx(0.191819, abs=1e-6)


def test_ars_weights_the_augmented_gain_by_g():
    """g = 0.75, gains 0.2 (augmented) and -0.1 (plain): beta = 0.15 - 0.025 = 0.125."""
    assert augmentation_robust_score(0.2, -0.1, g=0.75) == pytest.approx(0.325591, abs=1e-6)
    assert augmentation_robust_score(0.2, -0.1) == pytest.approx(squash(0.05))  # g = 0.5 by default


def test_scores_span_zero_to_one_on_fractions():
    """alpha = -1 (set 0, random 1, full 1) gives 0; alpha = 1 (set 1, random 0, full 0) gives 1; 0 gives 1/(1 + e)."""
    assert label_robust_score(improvement_over_random(0.0, 1.0), hard_label_recovery(1.0, 0.0)) == pytest.approx(
        0.0, abs=1e-12
    )
    assert label_robust_score(improvement_over_random(1.0, 0.0), hard_label_recovery(0.0, 1.0)) == pytest.approx(1.0)
    assert squash(0.0) == pytest.approx(0.268941, abs=1e-6)  # (1 - 1/e) / (e - 1/e) = 1 / (1 + e)


@pytest.mark.parametrize("value", [60.0, -0.1, float("nan")])
def test_percentages_and_impossible_accuracies_are_refused(value):
    with pytest.raises(ValueError, match="fraction in \\[0, 1\\]"):
        improvement_over_random(value, 0.5)


def rows(**percent) -> dict[str, EvalResult]:
    """Rows by role with one network each, test accuracy in %."""
    return {role: EvalResult(role, [value]) for role, value in percent.items()}


def test_dd_scores_from_rows_in_percent():
    """set 80, random 50, full 90, plain set 60, plain random 40 (%):
    IOR 0.30, HLR 0.10, alpha 0.15 - 0.05 = 0.10; beta = 0.5 * 0.30 + 0.5 * 0.20 = 0.25."""
    report = dd_scores(
        rows(set=80.0, random=50.0, full=90.0, set_plain=60.0, random_plain=40.0), scores=("ior", "hlr", "lrs", "ars")
    )
    assert report.split == "test" and report.missing == {}
    assert report.values["ior"] == pytest.approx(0.30) and report.values["hlr"] == pytest.approx(0.10)
    assert report.values["lrs"] == pytest.approx(0.313687, abs=1e-6)
    assert report.values["ars"] == pytest.approx(0.389783, abs=1e-6)


def test_ars_reads_the_rows_without_augmentation():
    """Plain rows equal to the augmented ones would give beta 0.30; the plain rows (60 vs 40) give 0.25."""
    report = dd_scores(rows(set=80.0, random=50.0, set_plain=60.0, random_plain=40.0), scores=("ars",))
    assert report.values["ars"] == pytest.approx(0.389783, abs=1e-6)
    assert report.values["ars"] != pytest.approx(squash(0.30))


def test_soft_label_scores_use_the_soft_rows_for_ior_and_hard_labels_for_hlr():
    """soft set 85, soft random 70: soft IOR 0.15; soft LRS = squash(0.075 - 0.05) with HLR 0.10 (full 90, hard set 80)."""
    report = dd_scores(
        rows(set=80.0, random=50.0, full=90.0, set_soft=85.0, random_soft=70.0), scores=("soft_ior", "soft_lrs")
    )
    assert report.values["soft_ior"] == pytest.approx(0.15)
    assert report.values["soft_lrs"] == pytest.approx(0.279712, abs=1e-6)


def test_validation_accuracy_is_used_when_every_row_has_one():
    both = {
        "set": EvalResult("set", [10.0], val_accuracies=[70.0]),
        "random": EvalResult("random", [90.0], val_accuracies=[50.0]),
    }
    report = dd_scores(both, scores=("ior",))
    assert report.split == "validation" and report.values["ior"] == pytest.approx(0.20)
    both["random"].val_accuracies = []  # one row without: all rows fall back to test, never a mix
    report = dd_scores(both, scores=("ior",))
    assert report.split == "test" and report.values["ior"] == pytest.approx(-0.80)


def test_a_score_whose_rows_are_missing_is_not_reported_and_says_what_it_needs():
    hints = {"full": "set --full_set_epochs > 0", "set_plain": "set --scores true", "random_plain": "set --scores true"}
    report = dd_scores(rows(set=80.0, random=50.0), hints, scores=("ior", "hlr", "lrs", "ars"))
    assert set(report.values) == {"ior"}
    assert report.missing["hlr"] == "needs the full-training-set row (set --full_set_epochs > 0)"
    assert (
        report.missing["ars"]
        == "needs the distilled set without augmentation and random real without augmentation (set --scores true)"
    )
    line = report.line("convnet")
    assert line.startswith(
        "DD-Ranking scores (convnet), from test accuracy as fractions: IOR +0.3000; not computed: HLR, LRS: needs the full-training-set row"
    )
    assert "\n" not in line
