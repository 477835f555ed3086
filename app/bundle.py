"""Export bundles: what leaves the workstation, self-describing and verifiable.

``exports/<run>/`` holds the ONNX model (checked against PyTorch), optionally the files
of export formats (app.formats: an INT8 copy today), a model card ``metadata.json`` and a README. The card says what the model is
for (task, modality, region, classes), how to prepare its input, how well it did
(metrics with confidence intervals), where it came from (dataset and configuration
hashes, package versions) and the SHA-256 of every model file, which
``load_bundle`` checks before anything runs.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

from app.atomic import swap_in, temp_sibling
from core.errors import ExportError
from app.laterality import flips_sentence
from app.organize.scan import file_sha256 as sha256_of
from app.progress import Progress, report
from app.signing import check_signature, sign_bundle, trusted_raw_keys
from app.verdict import model_verdict
from app.state import Kind, read_state, write_state
from app.workspace import Workspace, now_iso

CARD = "metadata.json"
PACKAGES = ("torch", "timm", "onnx", "onnxruntime", "numpy", "pydicom", "monai", "scikit-learn", "scikit-image")


@dataclass(frozen=True)
class BundleResult:
    run: str
    path: Path
    max_abs_diff: float
    int8: dict[str, Any] | None  # the int8 format's record (also in ``formats``)
    formats: dict[str, dict[str, Any]] = field(default_factory=dict)  # format name -> its record in the card


def _json_hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def package_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return found


def code_version() -> str:
    """This app's version: the git commit it runs from (with '+changes' when the tree differs),
    else the installed package's version, else 'unknown'."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"medanomaly-workbench {version('medanomaly-workbench')}"
        except PackageNotFoundError:
            return "unknown"
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"git {commit}{'+changes' if dirty else ''}"


def dominant(counts: dict[str, int]) -> list[str]:
    """The values that make up at least a tenth of a dataset, most frequent first."""
    total = sum(counts.values()) or 1
    return [k for k, v in sorted(counts.items(), key=lambda kv: -kv[1]) if v / total >= 0.1 and k not in ("", "OT", "unknown")]


def _channels(phase: Any) -> int:
    return 2 if getattr(phase.config, "positions", False) else int(getattr(phase.config, "channels", 1))


def _preprocessing(config: dict[str, Any], dims: int = 2) -> dict[str, Any]:
    if dims == 3:
        positions = bool(config.get("positions", False))
        return {
            "channels": 2 if positions else 1, "size": [config["image_size"]] * 3, "dtype": "float32",
            "range": [0.0, 1.0],
            "steps": [
                "read with SimpleITK, oriented LPS, resampled to 1 mm (linear)",
                "CT: Hounsfield units -1000..1000 mapped to [0, 1]; MR: 1st-99th percentile scaling",
                "a 48-cubed cube around the point of interest (padded with 0), or the volume cropped to the body",
                "trilinear resize to the input size",
                *(["channel 2: constant, the anatomical position index (1-13, app/cubes.py POSITIONS; 0: none) / 13"]
                  if positions else []),
            ],
        }
    colour = int(config.get("channels", 1)) == 3
    read = ("read as RGB, 8 bits divided by 255 (DICOM colour as pydicom decodes it; grey images, which "
            "are read as below, repeated in all three channels)" if colour else
            "read as one grayscale plane")
    return {
        "channels": 3 if colour else 1, "size": [config["image_size"], config["image_size"]], "dtype": "float32",
        "range": [0.0, 1.0], "clahe": bool(config.get("clahe", False)),
        "steps": [
            read + " (DICOM: palette colour through its palette; modality rescale, then the stored window, "
            "MONOCHROME1 inverted; "
            "volumes: the middle axial slice; other images: 8-bit divided by 255, 16-bit scaled between "
            "the 1st and 99th percentiles)",
            *(["CLAHE (skimage.exposure.equalize_adapthist, clip_limit=0.01) at the image's own size"
               + (", on the brightness (HSV value) of colour images" if colour else "")]
              if config.get("clahe") else []),
            "bilinear resize to the input size" + (", each channel" if colour else ""),
        ],
    }


def model_card(ws: Workspace, run: str, files: dict[str, str], export: dict[str, Any],
               formats: dict[str, dict[str, Any]], *, meta: dict[str, Any] | None = None,
               phase: Any = None) -> dict[str, Any]:
    """The bundle's card; ``meta`` and ``phase``: the run as the export already loaded it."""
    from app.training import load_run_phase

    meta = meta or ws.run_metadata(run)
    phase = phase if phase is not None else load_run_phase(ws, run)
    dataset = ws.dataset_metadata(meta["dataset"])
    tconfig = read_state(ws.organized_path(meta["dataset"]) / "training_config.json", Kind.TRAINING_CONFIG)
    counts = dataset.get("counts", {})
    evaluation = meta.get("evaluation", {}).get("test", {})
    headline = {k: v for k, v in evaluation.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    task = ("classification" if phase.spec.output == "class_probabilities" else "anomaly_score")
    several = bool(getattr(phase, "multilabel", False))  # one probability per finding
    task = "multilabel_classification" if several else task
    outputs = export["outputs"]
    threshold = phase.threshold
    return {
        "name": run, "phase": meta["phase"], "task": task, "created": now_iso(),
        "modality": dominant(counts.get("by_modality", {})), "region": dominant(counts.get("by_region", {})),
        "classes": meta.get("classes", []), "normal_class": "normal" if "normal" in meta.get("classes", []) else None,
        "input": {"name": "image", "shape": ["batch", _channels(phase), *[phase.config.image_size] * phase.spec.input_dims],
                  "preprocessing": _preprocessing(meta["config"], phase.spec.input_dims)},
        "outputs": [{"name": n, "meaning": {
            "probabilities": "one probability per finding (sigmoid: several can be high, they need not sum to 1), "
                             "in the order of 'classes'" if several else
                             "class probabilities (softmax), in the order of 'classes'",
            "anomaly_score": "anomaly score; an image is anomalous when score >= decision_threshold",
        }[n]} for n in outputs],
        "decision_threshold": threshold if task == "anomaly_score" else None,
        # multi-label: the probability at which each finding is called, chosen on validation (Youden)
        **({"finding_thresholds": (meta.get("calibration") or {}).get("finding_thresholds")} if several else {}),
        "metrics": {"split": "test", "values": headline, "ci95": evaluation.get("ci95", {}),
                    "evaluated": evaluation.get("evaluated"),
                    "setting": "test-time augmentation (mirrored views averaged)" if evaluation.get("tta")
                    or mirrored(meta) else "single view"} if evaluation else None,
        "provenance": {
            "dataset": meta["dataset"], "dataset_items": dataset.get("items"),
            "dataset_version": meta.get("dataset_version") or None,
            "pretrained_weights": meta.get("pretrained_weights", "not applicable to this phase"),
            "seed": meta["config"].get("seed"), "code_version": code_version(),
            "dataset_metadata_sha256": _json_hash({k: v for k, v in dataset.items() if k != "created"}),
            "training_config_sha256": _json_hash(tconfig), "run_config": meta["config"],
            "run_config_sha256": _json_hash(meta["config"]), "epochs": meta.get("epoch"),
            # the same settings by layer (model, data, training, post_hoc) and where each came from
            "run_settings": meta.get("settings"), "setting_sources": meta.get("setting_sources"),
            "packages": package_versions(),
            "ensemble": averaged_members(meta),
            # the model (and its ONNX graph) averages each image with its left-right mirror
            "mirror_view": mirrored(meta),
            # whether training flipped images left-right, and the classes that mirror each other (app/laterality.py)
            "flips": meta.get("flips"),
        },
        "checks": {"onnx_checker": "passed", "max_abs_diff_vs_pytorch": export["max_abs_diff"],
                   "tolerance": 1e-4, "opset": export["opset"]},
        "int8": formats.get("int8"),  # kept by name: readers of earlier cards look here
        "formats": formats,
        "verdict": model_verdict(meta).as_dict(),
        "ood_gate": {**meta["ood_gate"], "file": "ood_gate.json",
                     "meaning": "an input is outside what the model was trained on when its modality/region pair "
                                "is not in 'seen', or its appearance distance (app/ood.py) exceeds 'threshold'"}
        if meta.get("ood_gate") else None,
        "files": files,
    }


def mirrored(meta: dict[str, Any]) -> bool:
    """Whether this run's model averages each image with its left-right mirror (a recipe
    search's choice on validation, app/recipes.py _mirror_choice)."""
    found = meta.get("ensemble") or {}
    return found.get("averaged_in") == meta.get("run") and bool((found.get("mirror") or {}).get("kept"))


def averaged_members(meta: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The models a recipe search averaged into this run (app/ensemble.py), each with its recipe
    and seed; None for one model."""
    found = meta.get("ensemble") or {}
    if found.get("averaged_in") != meta.get("run") or len(found.get("runs", [])) < 2:
        return None
    recipe = (meta.get("recipe") or {}).get("name")
    kept = [m for m in found.get("members", []) if m.get("kept")]
    return [{"run": found["runs"][0], "recipe": recipe, "seed": meta["config"].get("seed")},
            *({"run": m["member"], "recipe": m["recipe"], "seed": m["seed"]} for m in kept)]


def _weights_text(record: Any) -> str:
    if isinstance(record, dict):
        return f"{record.get('file')} (sha256 {str(record.get('sha256', ''))[:16]}...)"
    return "none, trained from scratch" if record is None else str(record)


def _readme(card: dict[str, Any]) -> str:
    shape = ", ".join(str(v) for v in card["input"]["shape"][1:])
    lines = [
        f"# {card['name']}", "",
        f"A {card['phase']} model ({card['task']}) exported by MedAnomaly Workbench on {card['created']}.",
        f"Modality: {', '.join(card['modality']) or 'unknown'}; region: {', '.join(card['region']) or 'unknown'}; "
        f"classes: {', '.join(card['classes'])}.", "",
        "Research use only; not a medical device.", "",
        f"**Verdict: {card['verdict']['level']}**"
        + (f": {'; '.join(card['verdict']['reasons'])}." if card["verdict"]["reasons"] else "."), "",
        f"Pretrained weights: {_weights_text(card['provenance'].get('pretrained_weights'))}. "
        f"Seed {card['provenance'].get('seed')}; code {card['provenance'].get('code_version')}; "
        f"dataset version {card['provenance'].get('dataset_version')}.", "",
        *([f"An average of {len(card['provenance']['ensemble'])} models (their logits), trained with the recipes and "
           "seeds: " + ", ".join(f"{m['recipe']} seed {m['seed']}" for m in card['provenance']['ensemble']) + ".", ""]
          if card["provenance"].get("ensemble") else []),
        *(["The model averages each image with its left-right mirror (inside the ONNX graph: give it the image "
           "as it is).", ""] if card["provenance"].get("mirror_view") else []),
        *([flips_sentence(card["provenance"].get("flips")), ""] if flips_sentence(card["provenance"].get("flips"))
          else []),
        "## Input", "",
        f"`image`: float32, shape (batch, {shape}), values in [0, 1]:", "",
        *[f"1. {step}" for step in card["input"]["preprocessing"]["steps"]], "",
        "## Outputs", "", *[f"- `{o['name']}`: {o['meaning']}" for o in card["outputs"]], "",
    ]
    if card["decision_threshold"] is not None:
        lines += [f"Decision threshold (chosen on validation): {card['decision_threshold']:.6g}", ""]
    if card.get("finding_thresholds"):
        lines += ["Each finding is called when its probability reaches its threshold, chosen on validation "
                  "(Youden's point): " + ", ".join(f"{name} {cut:.4g}" for name, cut in card["finding_thresholds"].items())
                  + ".", ""]
    if card["metrics"]:
        values, ci = card["metrics"]["values"], card["metrics"]["ci95"]
        lines += ["## Test metrics", "", f"Measured on the test split, {card['metrics'].get('setting', 'single view')}.",
                  "", "| metric | value | 95% CI |", "| --- | --- | --- |"]
        lines += [f"| {k} | {v:.4g} | {f'{ci[k][0]:.3f}-{ci[k][1]:.3f}' if k in ci else ''} |" for k, v in values.items()]
        lines += [""]
    lines += [
        "## Files", "", *[f"- `{name}` sha256 `{digest}`" for name, digest in card["files"].items()], "",
        "## Run it without MedAnomaly Workbench", "", "```python",
        "import hashlib, json, numpy as np, onnxruntime as ort",
        "card = json.load(open('metadata.json'))",
        "assert hashlib.sha256(open('model.onnx', 'rb').read()).hexdigest() == card['files']['model.onnx']",
        "session = ort.InferenceSession('model.onnx', providers=['CPUExecutionProvider'])",
        f"image = np.zeros((1, {shape}), np.float32)  # prepared as above",
        "outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {'image': image})))",
        "```", "",
    ]
    return "\n".join(lines)




def export_bundle(ws: Workspace, run: str, *, int8: bool = False, accept_int8_drop: bool = False,
                  formats: tuple[str, ...] | list[str] = (), progress: Progress | None = None) -> BundleResult:
    """Export ``run`` (see app.export.export_run) and write its bundle ``exports/<run>/``.

    The bundle is written beside and moved into place whole: a failed export leaves
    the previous bundle (if any) as it was. The model card is signed with the
    workspace's key (app.signing). ``formats``: more files from the export-format
    registry (app.formats; ``int8`` is the same as ``int8=True``), each refused when its
    check says so (an INT8 copy that loses more than 0.02 validation AUROC) unless
    ``accept_int8_drop``; each one's record is in the card.

    Raises:
        BusyError: the run is being trained, evaluated or exported by another process.
        ExportError: a failed check, or an INT8 drop past the limit.
    """
    from app.formats import get_format

    final = ws.export_dir(run)  # checks the name
    chosen = [get_format(name) for name in dict.fromkeys([*formats, *(["int8"] if int8 else [])])]  # known names
    with ws.lock("run", run):  # not while the run trains, nor two exports at once
        return _export_bundle(ws, run, final, chosen, accept_int8_drop, progress)


def _export_bundle(ws: Workspace, run: str, final: Path, chosen: list[Any], accept_loss: bool,
                   progress: Progress | None) -> BundleResult:
    from app.export import export_run
    from app.formats import build_format

    result = export_run(ws, run, progress)
    export = result.meta["export"]  # what export_run wrote, passed on rather than read again
    work = temp_sibling(final, "new")
    work.mkdir(parents=True)
    try:
        shutil.copy2(result.path, work / "model.onnx")
        records: dict[str, dict[str, Any]] = {}
        for fmt in chosen:
            report(progress, fmt.title, 0, 1)
            records[fmt.name] = build_format(fmt, ws, run, work / "model.onnx", work, accept_loss)
            report(progress, fmt.title, 1, 1)
        from app.ood import GATE_FILE

        if (ws.run_dir(run) / GATE_FILE).exists():  # the out-of-distribution gate travels with the model
            shutil.copy2(ws.run_dir(run) / GATE_FILE, work / GATE_FILE)
        made = [work / "model.onnx", *[work / fmt.file for fmt in chosen], *work.glob(GATE_FILE)]
        files = {p.name: sha256_of(p) for p in sorted(made)}
        card = model_card(ws, run, files, export, records, meta=result.meta, phase=result.phase)
        write_state(work / CARD, Kind.MODEL_CARD, card)
        (work / "README.md").write_text(_readme(card), encoding="utf-8")
        sign_bundle(ws.data_dir, work, CARD)
        swap_in(work, final)  # the previous bundle stays whole until this instant
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return BundleResult(run, final, result.max_abs_diff, records.get("int8"), records)


@dataclass(frozen=True)
class Bundle:
    path: Path
    card: dict[str, Any]
    trust: str = ""  # how its card is vouched for (app.signing.check_signature)

    def session(self, int8: bool = False, format: str | None = None) -> Any:
        """An ONNX Runtime session of the FP32 model, or of an export format's file (``format``,
        ``int8=True`` for "int8"), whose graph was checked against the card (input, outputs, classes).

        Raises:
            ExportError: no such model file, or a graph that does not match its card.
        """
        import onnxruntime as ort

        from app.formats import get_format

        chosen = format or ("int8" if int8 else None)
        name = get_format(chosen).file if chosen else "model.onnx"
        if name not in self.card["files"]:
            raise ExportError(f"The bundle {self.path} has no {name}. Export it again "
                              f"(with --format {chosen})." if chosen else f"The bundle {self.path} has no {name}.")
        try:
            session = ort.InferenceSession(str(self.path / name), providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types
            raise ExportError(f"{self.path / name} cannot be loaded by ONNX Runtime ({str(err)[:160]}). "
                              "Export the run again.") from err
        check_graph(session, self.card, self.path / name)
        return session


def check_graph(session: Any, card: dict[str, Any], where: Path) -> None:
    """The model's input and outputs are the ones its card describes, or ExportError."""
    wanted = [o["name"] for o in card.get("outputs", [])]
    found = [o.name for o in session.get_outputs()]
    inputs = [i.name for i in session.get_inputs()]
    problem = None
    if inputs != [card["input"].get("name", "image")]:
        problem = f"its inputs are {inputs}, the card says {[card['input'].get('name', 'image')]}"
    elif sorted(found) != sorted(wanted):
        problem = f"its outputs are {found}, the card says {wanted}"
    else:
        for output in session.get_outputs():
            shape = list(output.shape)
            last = shape[-1] if shape else None
            if output.name == "probabilities" and (len(shape) != 2 or (isinstance(last, int)
                                                                       and last != len(card["classes"]))):
                problem = f"'probabilities' has shape {shape}, not (batch, {len(card['classes'])} classes)"
            if output.name == "anomaly_score" and len(shape) != 1:
                problem = f"'anomaly_score' has shape {shape}, not (batch,)"
    if problem:
        raise ExportError(f"{where} does not match its model card: {problem}. Do not use it; export the run again.")


def check_outputs(outputs: dict[str, np.ndarray], classes: list[str], count: int, where: str) -> None:
    """Answers are numbers of the declared shapes: a NaN or infinite output is an error, never an answer."""
    for name, values in outputs.items():
        expected = (count, len(classes)) if name == "probabilities" else (count,)
        if tuple(values.shape) != expected:
            raise ExportError(f"{where} answered {name} of shape {tuple(values.shape)} where {expected} was "
                              "expected: the model does not match its card. Export the run again.")
        if not np.isfinite(values).all():
            raise ExportError(f"{where} answered NaN or infinite {name} for {int((~np.isfinite(values)).sum())} "
                              "value(s): the model is broken (damaged weights?). No answer was given; retrain "
                              "or export the run again.")


def load_bundle(path: Path, *, keys_from: Path | None, trust_unsigned: bool = False) -> Bundle:
    """Read a bundle: its card's signature, then every model file against the SHA-256 in the card.

    ``keys_from``: a workspace's data folder, whose own key and data/trusted_keys/ are
    trusted (None: none is). ``trust_unsigned`` accepts an unsigned, untrusted or badly
    signed bundle (the hashes are still checked).

    Raises:
        ExportError: no card, no or a bad signature (see app.signing.check_signature),
            a missing file, or a file whose content changed.
    """
    card_path = path / CARD
    if not card_path.exists():
        raise ExportError(f"{path} is not an export bundle (no {CARD}). Export the run again.")
    trust = check_signature(path, CARD, trusted_raw_keys(keys_from), trust_unsigned)
    card = read_state(card_path, Kind.MODEL_CARD)
    for name, expected in card["files"].items():
        file = path / name
        if not file.exists():
            raise ExportError(f"{file} is missing from the bundle. Export the run again.")
        if sha256_of(file) != expected:
            raise ExportError(
                f"{file} does not match the SHA-256 in its model card: it was changed or damaged after export. "
                "Do not use it; export the run again."
            )
    return Bundle(path, card, trust)
