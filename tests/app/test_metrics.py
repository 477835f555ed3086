import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

from core.metrics import (
    anomaly_intervals, bootstrap_intervals, calibration_errors, classification_metrics, headline_metrics,
)


@pytest.mark.parametrize("classes, seed", [(2, 0), (3, 1), (5, 2)])
def test_fast_metrics_equal_scikit_learn(classes: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    probabilities = rng.dirichlet(np.ones(classes), 200)
    targets = rng.integers(0, classes, 200)
    fast = headline_metrics(probabilities, targets)
    predicted = probabilities.argmax(1)
    auc = (roc_auc_score(targets, probabilities[:, 1]) if classes == 2
           else np.mean([roc_auc_score(targets == k, probabilities[:, k]) for k in range(classes)]))
    assert fast["roc_auc_ovr"] == pytest.approx(auc)
    assert fast["f1_macro"] == pytest.approx(f1_score(targets, predicted, average="macro"))
    assert fast["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(targets, predicted))


def test_per_class_sensitivity_and_specificity() -> None:
    probabilities = np.eye(3)[[0, 0, 1, 1, 2, 2]] * 0.9 + 0.05
    targets = np.array([0, 1, 1, 1, 2, 0])
    m = classification_metrics(probabilities, targets, ["normal", "tumor", "fracture"])
    assert m["per_class"]["tumor"] == {"sensitivity": pytest.approx(2 / 3), "specificity": 1.0, "support": 3,
                                       "auc": pytest.approx(roc_auc_score(targets == 1, probabilities[:, 1]))}
    assert m["per_class"]["normal"]["specificity"] == pytest.approx(3 / 4)
    assert sum(map(sum, m["confusion_matrix"])) == 6
    # The macro AUC is the mean of the per-class one-vs-rest AUCs (MedMNIST's multi-class AUC).
    assert np.mean([c["auc"] for c in m["per_class"].values()]) == pytest.approx(m["roc_auc_ovr"])
    absent = classification_metrics(probabilities, np.array([0, 1, 1, 1, 1, 0]), ["normal", "tumor", "fracture"])
    assert np.isnan(absent["per_class"]["fracture"]["auc"]), "no image of the class: no AUC"


def test_calibration_errors() -> None:
    sure_and_right = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert calibration_errors(sure_and_right, np.array([0, 1])) == {"ece": 0.0, "mce": 0.0}
    sure_and_wrong = np.array([[0.95, 0.05]] * 4)
    assert calibration_errors(sure_and_wrong, np.array([1, 1, 1, 1]))["ece"] == pytest.approx(0.95)


def test_bootstrap_intervals_bracket_the_estimate_and_narrow_with_more_data() -> None:
    rng = np.random.default_rng(0)

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        targets = rng.integers(0, 2, n)
        scores = np.clip(targets * 0.3 + rng.random(n) * 0.7, 0, 1)
        return np.stack([1 - scores, scores], 1), targets

    small, big = sample(60), sample(2000)
    ci_small = bootstrap_intervals(*small, rounds=300)["roc_auc_ovr"]
    ci_big = bootstrap_intervals(*big, rounds=300)["roc_auc_ovr"]
    assert ci_small[0] < headline_metrics(*small)["roc_auc_ovr"] < ci_small[1]
    assert ci_big[1] - ci_big[0] < ci_small[1] - ci_small[0]
    low, high = anomaly_intervals(big[1], big[0][:, 1], rounds=200)
    assert low < roc_auc_score(big[1], big[0][:, 1]) < high


def test_the_learning_curves_mark_the_epoch_whose_weights_were_kept(tmp_path) -> None:
    """The kept epoch is the first with the best validation monitor (as the training loop keeps best.pt)."""
    from app import plots

    history = [{"epoch": e, "train_loss": 1 / e, "val_auc": m, "monitor": m}
               for e, m in [(1, 0.7), (2, 0.9), (3, 0.8), (4, 0.9), (5, float("nan"))]]
    assert plots.kept_epoch(history) == 2
    assert plots.kept_epoch([{"epoch": 1, "train_loss": 1.0}]) is None
    import matplotlib

    matplotlib.use("Agg")
    from unittest import mock

    with mock.patch("matplotlib.axes.Axes.axvline", autospec=True) as line:
        plots.learning_curves(history, tmp_path / "curves.png", "run")
    assert [call.args[1] for call in line.call_args_list] == [2, 2]  # on both panels
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_metric_names_read_as_words_but_file_and_class_names_keep_their_underscores() -> None:
    from core.metrics import metric_label

    assert metric_label("balanced_accuracy") == "balanced accuracy"
    assert metric_label("skipped files (see scan_report.json)") == "skipped files (see scan_report.json)"
    assert metric_label("class other_anomaly") == "class other_anomaly"
