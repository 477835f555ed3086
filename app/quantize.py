"""The INT8 export format: static quantization of the bundle's ONNX model with ONNX Runtime
(QDQ, per-channel int8 weights, uint8 activations, calibrated on validation images), and
its change of the validation AUROC, which the model card records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from app.formats import register_format
from app.workspace import Workspace
from core.errors import ExportError

INT8_MAX_DROP = 0.02  # validation AUROC an INT8 copy may lose before it is refused


def _int8_check(record: dict[str, Any], accept_loss: bool) -> str | None:
    record["max_drop_allowed"] = INT8_MAX_DROP
    record["drop_accepted"] = bool(record["change"] < -INT8_MAX_DROP)
    if record["change"] < -INT8_MAX_DROP and not accept_loss:
        return (f"INT8 lowers {record['metric']} from {record['fp32']:.4f} to {record['int8']:.4f} "
                f"({record['change']:+.4f}; at most -{INT8_MAX_DROP} is allowed): nothing was exported, the "
                "previous bundle is unchanged. Export without --int8 (FP32), or add --accept-int8-drop to "
                "export it anyway (the drop is then written in the model card).")
    return None


@register_format("int8", file="model.int8.onnx", title="INT8 quantization", check=_int8_check)
def quantize_int8(ws: Workspace, run: str, source: Path, target: Path) -> dict[str, Any]:
    """Static INT8 quantization (QDQ, calibrated on validation images) and its metric change.

    The metric is the validation AUROC (classifiers: of 1 - P(normal) when there is a
    normal class, else macro one-vs-rest ROC-AUC), FP32 against INT8.
    """
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from app.data import phase_images, split_rows
    from app.training import load_run_phase

    meta = ws.run_metadata(run)
    phase = load_run_phase(ws, run)
    rows = [r for r in split_rows(ws, meta["dataset"], "val") if r["labeled"]]
    if phase.spec.output == "class_probabilities":
        rows = phase.select_rows(rows)
    if not rows:
        raise ExportError("INT8 needs labeled validation images to calibrate on and to measure the change.")
    images = phase_images(ws, phase, rows)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"image": images[i : i + 16]} for i in range(0, min(len(images), 128), 16)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    prepared = target.with_name(".prepared.onnx")
    try:
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(target), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        op_types_to_quantize=["Conv", "Gemm", "MatMul"])  # softmax and scores stay float
    except Exception as err:
        target.unlink(missing_ok=True)
        raise ExportError(f"INT8 quantization failed ({type(err).__name__}: {err}); the FP32 model is unaffected.") from err
    finally:
        prepared.unlink(missing_ok=True)

    def metric(path: Path) -> float:
        from core.metrics import anomaly_auroc, classification_metrics, finding_figures

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = np.concatenate([session.run(None, {"image": images[i : i + 32]})[-1] for i in range(0, len(images), 32)])
        if getattr(phase, "multilabel", False):  # the mean of the findings' AUCs
            return float(finding_figures(got, phase.targets(rows).numpy(), 0.5)["roc_auc_ovr"])
        if phase.spec.output == "class_probabilities":
            targets = np.array([phase.classes.index(r["label"]) for r in rows])
            return float(classification_metrics(got, targets, phase.classes)["roc_auc_ovr"])
        return float(anomaly_auroc(np.array([0 if r["label"] == "normal" else 1 for r in rows]), got))

    before, after = metric(source), metric(target)
    name = "val_roc_auc" if phase.spec.output == "class_probabilities" else "val_anomaly_auroc"
    return {"file": target.name, "metric": name, "fp32": before, "int8": after, "change": after - before,
            "calibration_images": min(len(images), 128), "scheme": "static QDQ, per-channel int8 weights, uint8 activations"}


