"""DD-Ranking's scores: how much a distilled set is worth beyond its labels and its augmentation.

A raw accuracy flatters a set evaluated with help (soft labels from a teacher, heavy
augmentation) that real images of the same storage would get as well. DD-Ranking (Li et al.
2025) scores a set against such baselines, all evaluated under one protocol:

* **HLR** (hard label recovery) = acc(full real training set) - acc(set), both with hard
  labels: how much of the full data's accuracy the set still misses (lower is better).
* **IOR** (improvement over random) = acc(set) - acc(random real subset of the same storage),
  both under the same evaluation: what distillation adds to picking real images (higher is better).
* **LRS** (label-robust score): ``alpha = w * IOR - (1 - w) * HLR`` (``w = 0.5``), then
  ``LRS = (e^alpha - e^-1) / (e - e^-1)``.
* **ARS** (augmentation-robust score): ``beta = g * (set - random, with augmentation)
  + (1 - g) * (set - random, without augmentation)`` (``g = 0.5``), then
  ``ARS = (e^beta - e^-1) / (e - e^-1)``.

Every accuracy here is a FRACTION in [0, 1], not a percentage. DD-Ranking's code feeds
percentages into ``exp()``, where ``e^alpha`` saturates (``alpha`` of tens of points) and the
scores leave [0, 1]; on fractions IOR and HLR lie in [-1, 1], so ``alpha`` and ``beta`` (convex
combinations of such differences, up to sign) lie in [-1, 1] and LRS and ARS in [0, 1]. The
map is not centred: ``alpha = 0`` (IOR and HLR balanced) gives ``(1 - e^-1) / (e - e^-1)``, about
0.269, and ``beta = 0`` (no gain over random real, with or without augmentation) the same.

The formulas are pure functions; :func:`dd_scores` applies them to the rows of one network's
evaluation (keyed by the roles below), using validation accuracy when every row has one and
test accuracy otherwise, final epoch only, and names each score whose rows are missing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Protocol, Sequence

W = 0.5  # DD-Ranking's weight of IOR against HLR in alpha
G = 0.5  # DD-Ranking's weight of the augmented gain against the plain one in beta

# The rows of one network's evaluation, by role (what each score reads).
ROLES = ("set", "random", "full", "set_plain", "random_plain", "set_soft", "random_soft")
ROLE_TEXT = {
    "set": "the distilled set's row",
    "random": "the random-real row",
    "full": "the full-training-set row",
    "set_plain": "the distilled set without augmentation",
    "random_plain": "random real without augmentation",
    "set_soft": "the distilled set with soft labels",
    "random_soft": "random real with soft labels",
}
# Score -> the roles it reads.
INPUTS = {
    "ior": ("set", "random"),
    "hlr": ("full", "set"),
    "lrs": ("set", "random", "full"),
    "ars": ("set", "random", "set_plain", "random_plain"),
    "soft_ior": ("set_soft", "random_soft"),
    "soft_lrs": ("set_soft", "random_soft", "full", "set"),
}
NAMES = {"ior": "IOR", "hlr": "HLR", "lrs": "LRS", "ars": "ARS", "soft_ior": "soft IOR", "soft_lrs": "soft LRS"}


class Row(Protocol):
    """What a score reads of an evaluation row (:class:`~lightning_dd.evaluation.EvalResult`): accuracies in %."""

    accuracies: list[float]
    val_accuracies: list[float]


def _fraction(name: str, value: float) -> float:
    """``value`` if it is a finite fraction in [0, 1]; a percentage here is a bug, so it is refused."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be an accuracy as a fraction in [0, 1], got {value!r}")
    return float(value)


def squash(x: float) -> float:
    """``(e^x - e^-1) / (e - e^-1)``: maps [-1, 1] onto [0, 1], 0 onto about 0.269."""
    return (math.exp(x) - math.exp(-1.0)) / (math.e - math.exp(-1.0))


def improvement_over_random(synthetic: float, random: float) -> float:
    """IOR = acc(set) - acc(random real subset of the same storage), fractions."""
    return _fraction("synthetic", synthetic) - _fraction("random", random)


def hard_label_recovery(full: float, synthetic: float) -> float:
    """HLR = acc(full real training set) - acc(set), fractions, hard labels."""
    return _fraction("full", full) - _fraction("synthetic", synthetic)


def label_robust_score(ior: float, hlr: float, w: float = W) -> float:
    """LRS = squash(w * IOR - (1 - w) * HLR)."""
    return squash(w * ior - (1.0 - w) * hlr)


def augmentation_robust_score(gain_augmented: float, gain_plain: float, g: float = G) -> float:
    """ARS = squash(g * gain with augmentation + (1 - g) * gain without), gains = set - random (fractions)."""
    return squash(g * gain_augmented + (1.0 - g) * gain_plain)


@dataclass
class ScoreReport:
    """The scores that could be computed (as fractions), and why the others could not."""

    values: dict[str, float] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    split: str = "test"

    def to_dict(self) -> dict:
        return {"split": self.split, "values": dict(self.values), "missing": dict(self.missing)}

    def line(self, label: str = "") -> str:
        """One line for a report: the scores, then the ones not computed and what they need."""
        shown = ", ".join(
            f"{NAMES[k]} {v:+.4f}" if k in ("ior", "hlr", "soft_ior") else f"{NAMES[k]} {v:.4f}"
            for k, v in self.values.items()
        )
        head = f"DD-Ranking scores{f' ({label})' if label else ''}, from {self.split} accuracy as fractions: {shown or 'none'}"
        if not self.missing:
            return head
        reasons: dict[str, list[str]] = {}
        for key, reason in self.missing.items():
            reasons.setdefault(reason, []).append(NAMES[key])
        return (
            head + "; not computed: " + "; ".join(f"{', '.join(names)}: {reason}" for reason, names in reasons.items())
        )


def row_accuracy(row: Row, use_validation: bool) -> float:
    """Mean accuracy of a row as a fraction: validation when ``use_validation``, else test."""
    values = row.val_accuracies if use_validation else row.accuracies
    return sum(values) / len(values) / 100.0


def dd_scores(
    rows: Mapping[str, Row], hints: Mapping[str, str] | None = None, scores: Sequence[str] = tuple(INPUTS)
) -> ScoreReport:
    """The DD-Ranking scores that ``rows`` (role -> row) allow; the others listed with what they need.

    Args:
        rows: one network's rows by role (:data:`ROLES`), all evaluated under one protocol.
        hints: role -> the setting that adds that row (``"set --full_set_epochs > 0"``), quoted
            for each missing score.
        scores: which scores to compute (default all of :data:`INPUTS`).
    """
    present = {role: row for role, row in rows.items() if row is not None and row.accuracies}
    use_validation = bool(present) and all(row.val_accuracies for row in present.values())
    acc = {role: row_accuracy(row, use_validation) for role, row in present.items()}
    report = ScoreReport(split="validation" if use_validation else "test")
    for key in scores:
        absent = [role for role in INPUTS[key] if role not in acc]
        if absent:
            report.missing[key] = _needs(absent, hints)
            continue
        report.values[key] = _score(key, acc)
    return report


def _needs(roles: Sequence[str], hints: Mapping[str, str] | None) -> str:
    """``needs <rows> (<setting>)``, rows that one setting adds named together."""
    groups: dict[str, list[str]] = {}
    for role in roles:
        groups.setdefault((hints or {}).get(role, ""), []).append(ROLE_TEXT[role])
    return "needs " + " and ".join(
        " and ".join(texts) + (f" ({hint})" if hint else "") for hint, texts in groups.items()
    )


def _score(key: str, acc: Mapping[str, float]) -> float:
    """One score from the fractions ``acc`` (role -> accuracy), all its inputs present."""
    if key == "ior":
        return improvement_over_random(acc["set"], acc["random"])
    if key == "hlr":
        return hard_label_recovery(acc["full"], acc["set"])
    if key == "lrs":
        return label_robust_score(
            improvement_over_random(acc["set"], acc["random"]), hard_label_recovery(acc["full"], acc["set"])
        )
    if key == "ars":
        gain_augmented = improvement_over_random(acc["set"], acc["random"])
        return augmentation_robust_score(gain_augmented, improvement_over_random(acc["set_plain"], acc["random_plain"]))
    if key == "soft_ior":
        return improvement_over_random(acc["set_soft"], acc["random_soft"])
    if key == "soft_lrs":  # DD-Ranking's LRS of a soft-label method: IOR under its own labels, HLR with hard ones
        return label_robust_score(
            improvement_over_random(acc["set_soft"], acc["random_soft"]), hard_label_recovery(acc["full"], acc["set"])
        )
    raise KeyError(key)
