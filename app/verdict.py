"""How far to trust a model: one verdict from its test evaluation and its calibration.

Shown wherever a model appears (status, evaluate, predict, the model card, the
workflow's end), so that a weak model is never presented as if it were fit for use.

Levels: ``fit`` (nothing found), ``weak`` (usable with care: say why), ``unfit`` (do
not use its answers: near-chance discrimination, or a class it never predicts), and
``unknown`` (not evaluated on the test split yet).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

CHANCE_AUC = 0.65  # below: near chance, unfit
WEAK_AUC = 0.80  # below: weak
WEAK_ECE = 0.15  # calibrated probabilities off by more than this on average: weak
WIDE_CI = 0.20  # a 95% interval of the headline AUC wider than this: the test set is too small to tell


@dataclass(frozen=True)
class Verdict:
    level: str  # fit | weak | unfit | unknown
    reasons: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """One line: 'unfit: never predicts normal; ...'."""
        if not self.reasons:
            return self.level
        return f"{self.level}: {'; '.join(self.reasons)}"

    def as_dict(self) -> dict[str, Any]:
        return {"level": self.level, "reasons": list(self.reasons)}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def model_verdict(meta: dict[str, Any]) -> Verdict:
    """The verdict on a run from its metadata (its last test evaluation and calibration)."""
    test = (meta.get("evaluation") or {}).get("test")
    if not test:
        return Verdict("unknown", ["not evaluated on the test split yet (run Evaluate)"])
    unfit: list[str] = []
    weak: list[str] = []
    classifier = "roc_auc_ovr" in test
    key = "roc_auc_ovr" if classifier else "anomaly_auroc"
    auc = _number(test.get(key))
    name = "macro AUC" if classifier else "anomaly AUROC"
    if auc is None:
        weak.append(f"{name} could not be measured (the test split lacks a class)")
    elif auc < CHANCE_AUC:
        unfit.append(f"{name} {auc:.2f}, near chance")
    elif auc < WEAK_AUC:
        weak.append(f"{name} {auc:.2f}, weak discrimination")
    if "exact_match" in test:  # findings, each its own probability and threshold (chosen on validation)
        figures = test.get("per_class") or {}
        chosen = all("sensitivity_at_val_threshold" in f for f in figures.values())
        missed = [label for label, f in figures.items() if f.get("support", 0)
                  and _number(f.get("sensitivity_at_val_threshold" if chosen else "sensitivity")) == 0.0]
        if missed:
            weak.append(f"never calls {', '.join(missed)} at "
                        + ("its threshold chosen on validation" if chosen else "a probability of 0.5")
                        + ": read their probabilities, not the yes/no")
        near = [label for label, figures in test["per_class"].items()
                if _number(figures.get("auc")) is not None and figures["auc"] < CHANCE_AUC]
        if near:
            weak.append(f"near chance on {', '.join(near)}")
    else:
        unfit += [f"never predicts {label!r} ({figures['support']} in the test split)"
                  for label, figures in (test.get("per_class") or {}).items()
                  if figures.get("support", 0) and _number(figures.get("sensitivity")) == 0.0]
    if not classifier:
        sensitivity, specificity = _number(test.get("sensitivity")), _number(test.get("specificity"))
        if sensitivity == 0.0:
            unfit.append("flags no anomaly at its threshold")
        elif specificity == 0.0:
            unfit.append("flags every normal image at its threshold")
    calibration = meta.get("calibration") or {}
    if classifier and calibration.get("skipped") and "off for this run" not in str(calibration["skipped"]):
        weak.append("calibration failed (" + str(calibration["skipped"]).split(":")[0] + ")")
    ece = _number(test.get("ece"))
    if classifier and ece is not None and ece > WEAK_ECE:
        weak.append(f"over- or under-confident (test ECE {ece:.2f})")
    interval = (test.get("ci95") or {}).get(key)
    if isinstance(interval, (list, tuple)) and len(interval) == 2 and all(_number(v) is not None for v in interval):
        if interval[1] - interval[0] > WIDE_CI:
            weak.append(f"test set too small to be sure ({name} 95% CI {interval[0]:.2f}-{interval[1]:.2f})")
    if meta.get("dataset_changed") or test.get("dataset_changed"):
        weak.append("its dataset was organized again since training")
    if unfit:
        return Verdict("unfit", unfit + weak)
    if weak:
        return Verdict("weak", weak)
    return Verdict("fit", [])
