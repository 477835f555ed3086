"""Patient-level, stratified, seeded train/val/test splits."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import Any

from core.errors import DatasetError

SPLITS = ("train", "val", "test")


def assign_splits(
    items: list[dict[str, Any]], fractions: tuple[float, float, float] = (0.70, 0.15, 0.15), seed: int = 0
) -> None:
    """Set ``item["split"]`` so that every patient's items share one split.

    Patients are stratified by their most telling label (any anomaly before normal,
    then unlabeled) and region, so each split gets its share of each stratum.
    """
    by_patient: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in items:
        by_patient[item["patient_id"]].append(item)
    strata: dict[str, list[str]] = defaultdict(list)
    # Patients in an order that does not depend on the workspace: pseudonyms come from
    # the workspace's secret key, file contents do not. The same files and seed give
    # the same splits in any workspace.
    def stable(pair: tuple[str, list[dict[str, Any]]]) -> tuple[str, str]:
        return (min((i.get("sha256") or "") for i in pair[1]), pair[0])

    for patient, own in sorted(by_patient.items(), key=stable):
        labels = Counter(i["label"] for i in own if i["label"])
        anomalies = [lab for lab, _ in labels.most_common() if lab != "normal"]
        key = anomalies[0] if anomalies else ("normal" if labels else "unlabeled")
        strata[f"{key}|{own[0]['region']}"].append(patient)
    rng = random.Random(seed)
    choice: dict[str, str] = {}
    for key in sorted(strata):
        patients = strata[key]
        rng.shuffle(patients)
        n = len(patients)
        n_test = round(n * fractions[2])
        n_val = round(n * fractions[1])
        if n >= 3:  # every split gets at least one patient of each stratum that can spare one
            n_test, n_val = max(1, n_test), max(1, n_val)
        for k, patient in enumerate(patients):
            choice[patient] = "test" if k < n_test else "val" if k < n_test + n_val else "train"
    for item in items:
        item["split"] = choice[item["patient_id"]]
    check_patient_disjoint(items)


def check_patient_disjoint(items: list[dict[str, Any]]) -> None:
    """Raise if any patient appears in two splits (checked on every write)."""
    seen: dict[str, str] = {}
    for item in items:
        first = seen.setdefault(item["patient_id"], item["split"])
        if first != item["split"]:
            raise DatasetError(
                f"Patient {item['patient_id']} is in both {first} and {item['split']}: "
                "the splits would leak. Re-run Organize to rebuild them."
            )
