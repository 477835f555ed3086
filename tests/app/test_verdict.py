"""The verdict on a model: what makes it weak or unfit, from its test figures."""

from app.verdict import model_verdict


def meta(test=None, calibration=None):
    return {"run": "r", "evaluation": {"test": test} if test is not None else {}, "calibration": calibration or {}}


GOOD = {"roc_auc_ovr": 0.95, "ece": 0.04, "ci95": {"roc_auc_ovr": [0.92, 0.97]},
        "per_class": {"normal": {"sensitivity": 0.9, "support": 40}, "tumor": {"sensitivity": 0.8, "support": 30}}}


def test_a_good_classifier_is_fit() -> None:
    assert model_verdict(meta(GOOD)).level == "fit"


def test_an_unevaluated_model_is_unknown() -> None:
    verdict = model_verdict(meta())
    assert verdict.level == "unknown" and "not evaluated" in verdict.text


def test_near_chance_or_a_class_never_predicted_is_unfit() -> None:
    assert model_verdict(meta({**GOOD, "roc_auc_ovr": 0.55})).level == "unfit"
    never = {**GOOD, "per_class": {**GOOD["per_class"], "normal": {"sensitivity": 0.0, "support": 40}}}
    verdict = model_verdict(meta(never))
    assert verdict.level == "unfit" and "never predicts 'normal' (40 in the test split)" in verdict.text


def test_weaknesses_are_named() -> None:
    verdict = model_verdict(meta({**GOOD, "ece": 0.5, "ci95": {"roc_auc_ovr": [0.6, 0.99]}},
                                 {"skipped": "the temperature fit ran off to 150: the validation split cannot calibrate"}))
    assert verdict.level == "weak"
    assert "calibration failed (the temperature fit ran off to 150)" in verdict.text
    assert "test ECE 0.50" in verdict.text and "test set too small" in verdict.text
    assert model_verdict(meta({**GOOD, "roc_auc_ovr": 0.72})).level == "weak"
    # Calibration switched off on purpose is not a failure.
    assert model_verdict(meta(GOOD, {"skipped": "calibration is off for this run (calibration none)"})).level == "fit"


def test_anomaly_scorers_are_judged_on_their_auroc_and_threshold() -> None:
    scorer = {"anomaly_auroc": 0.9, "sensitivity": 0.8, "specificity": 0.9, "ci95": {"anomaly_auroc": [0.85, 0.95]}}
    assert model_verdict(meta(scorer)).level == "fit"
    assert model_verdict(meta({**scorer, "sensitivity": 0.0})).level == "unfit"
    assert model_verdict(meta({**scorer, "anomaly_auroc": 0.5})).level == "unfit"
