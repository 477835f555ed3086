"""Run trained models on new images: a file, a DICOM series or a folder.

Each input item (a 2D image, a volume, or a DICOM series grouped as the organizer
groups them) is prepared the way its model was trained. Without ``run``, the item's
modality and region are detected with the organizer's rules and the model trained
on matching data is chosen (the multi-organ router); when none matches, the item is
reported as such, never forced through a model that has not seen its kind of image.
An exported bundle runs on ONNX Runtime (after its SHA-256 check); a run without
one runs on PyTorch.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from app.atomic import temp_sibling
from app.bundle import Bundle, check_outputs, dominant, load_bundle
from core.errors import DatasetError, WorkbenchError
from core.findings import FINDING_CALL
from app.progress import Progress, report
from app.state import Kind, write_state
from app.ood import OUTSIDE, Gate, load_gate
from app.verdict import Verdict, model_verdict
from app.workspace import Workspace, now_iso
from models.registry import routable_phases

log = logging.getLogger(__name__)



@dataclass
class Item:
    name: str  # relative to the input given; in memory only, never shown or written (file names identify)
    files: list[Path]
    kind: str  # image2d | volume | dicom_series
    modality: str = "OT"
    region: str = "unknown"


@dataclass
class Prediction:
    item: str  # the input's item id (app.private); where it is: the workspace's private map
    modality: str
    region: str
    name: str = ""  # the file's own base name, only with show_names (it can identify a patient)
    run: str = ""
    engine: str = ""  # onnxruntime | pytorch
    predicted_class: str = ""
    confidence: float | None = None
    anomaly_score: float | None = None
    threshold: float | None = None
    is_anomaly: bool | None = None
    model_verdict: str = ""  # fit | weak | unfit | unknown: how far to trust the model (app.verdict)
    outside: bool = False  # outside what the model was trained on (app.ood): no answer unless allowed
    ood_distance: float | None = None  # appearance distance to the training images (threshold: the gate's)
    note: str = ""
    probabilities: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PredictResult:
    predictions: list[Prediction]
    folder: Path
    csv: Path
    json: Path
    overlays: list[Path]
    verdicts: dict[str, str] = field(default_factory=dict)  # run -> its verdict in one line
    outside: int = 0  # items outside what any model was trained on (no answer given, unless allowed)
    holds_names: bool = False  # file names were asked for (show_names): the output can identify patients


# -- inputs ----------------------------------------------------------------------------------
def load_readers() -> None:
    """Import every image reader now. Imported lazily by many threads at once (a server's
    requests), a package half-imported by one thread is seen by another: pydicom then
    fails with "partially initialized module" on every request after."""
    import PIL.Image  # noqa: F401
    import pydicom  # noqa: F401
    import pydicom.filereader  # noqa: F401
    import pydicom.pixels  # noqa: F401
    import SimpleITK  # noqa: F401

    from app.organize import detect, pixel_rules, scan  # noqa: F401
    from app.organize.organizer import group_items  # noqa: F401


def find_items(path: Path) -> list[Item]:
    """The items under ``path`` with their detected modality and region.

    Raises:
        DatasetError: the path does not exist or holds no image this tool reads.
    """
    from app.organize.detect import MODALITY_RULES, REGION_RULES, described_regions, detect
    from app.organize.organizer import group_items, json_facts
    from app.organize.pixel_rules import fill_regions
    from app.organize.scan import IMAGE_2D, VOLUMES, FileRecord, base_name, scan_file, scan_tree

    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise DatasetError(f"{path} does not exist.")
    root = path if path.is_dir() else path.parent
    if path.is_dir():
        records, skipped, _ = scan_tree(root, b"predict", workers=1)
    else:  # one file: read it alone, not its whole folder (and its sidecar, if it has one)
        found, _ = scan_file(path, root, b"predict")
        records, skipped = ([found], []) if isinstance(found, FileRecord) else ([], [found])
        sidecar = path.with_name(base_name(path.name, (*VOLUMES, *IMAGE_2D, ".dcm")) + ".json")
        if records and sidecar.is_file():
            records += [r for r in [scan_file(sidecar, root, b"predict")[0]] if isinstance(r, FileRecord)]
    facts = json_facts(records)  # as the organizer reads them
    items, rows = [], []
    for files, kind in group_items(records, root):
        middle = files[len(files) // 2]
        header = facts.header(middle)
        relative = PurePath(Path(middle.path).relative_to(root))
        # The rules also read the name of the folder given (a folder called chest_xray says chest).
        seen_as = PurePath(root.name) / relative
        modality = detect(MODALITY_RULES, header, seen_as, default="OT")
        region = detect(REGION_RULES, header, seen_as)
        named = described_regions(header) if region.rule in ("dicom_body_part", "dicom_description") else []
        rows.append({"kind": kind, "modality": modality.value, "modality_rule": modality.rule, "region": region.value,
                     "regions": "|".join(named) if len(named) > 1 else ""})
        items.append(Item(
            name=str(relative.parent / f"{relative.name} (+{len(files) - 1} slices)") if len(files) > 1 else str(relative),
            files=[Path(f.path) for f in files], kind=kind, modality=modality.value, region=region.value,
        ))
    fill_regions(rows, [[str(f) for f in item.files] for item in items])  # as the organizer does
    for item, row in zip(items, rows):
        item.modality, item.region = row["modality"], row["region"]
    if not items:
        reasons = sorted({s.reason for s in skipped})[:3]
        raise DatasetError(f"No image this tool reads under {path}" + (f" ({'; '.join(reasons)})" if reasons else "")
                           + ". Give a DICOM file or series folder, a PNG/JPEG/TIFF or a NIfTI volume.")
    return items


# -- models ----------------------------------------------------------------------------------
@dataclass
class Model:
    run: str
    phase: str
    classes: list[str]
    image_size: int
    clahe: bool
    modalities: list[str]
    regions: list[str]
    threshold: float | None
    bundle: Bundle | None
    verdict: Verdict = Verdict("unknown")
    channels: int = 1  # 3: a colour model (images read as RGB)
    gate: Gate | None = None
    multilabel: bool = False  # ``classes`` are findings, each with its own probability (several can be present)
    finding_thresholds: dict[str, float] | None = None  # multi-label: each finding's call, chosen on validation
    _torch: Any = None
    _session: Any = None

    @property
    def engine(self) -> str:
        return "onnxruntime" if self.bundle else "pytorch"

    def run_batch(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """{'probabilities': (N, C)} and/or {'anomaly_score': (N,)}, checked (shapes, finite).

        Raises:
            ExportError: outputs of the wrong shape, or NaN / infinite ones.
        """
        outputs = self._raw_batch(images)
        check_outputs(outputs, self.classes, len(images), f"Model {self.run} ({self.engine})")
        return outputs

    def _raw_batch(self, images: np.ndarray) -> dict[str, np.ndarray]:
        if self.bundle:
            if self._session is None:
                self._session = self.bundle.session()
            names = [o.name for o in self._session.get_outputs()]
            return dict(zip(names, self._session.run(None, {"image": images})))
        import torch

        with torch.no_grad():
            out = self._torch.export_module().eval()(torch.from_numpy(images))
        if isinstance(out, tuple):
            return {"probabilities": out[0].numpy(), "anomaly_score": out[1].numpy()}
        key = "probabilities" if self._torch.spec.output == "class_probabilities" else "anomaly_score"
        return {key: out.numpy()}


def load_model(ws: Workspace, run: str, trust_unsigned: bool = False) -> Model:
    """A finished run, from its bundle when exported (signature and hashes checked), else from
    its checkpoint.

    Raises:
        ExportError: the bundle is unsigned, badly signed or changed (see app.bundle.load_bundle).
    """
    from app.training import load_run_phase

    from app.evaluate import dataset_changed

    meta = ws.run_metadata(run)
    counts = ws.dataset_metadata(meta["dataset"]).get("counts", {})
    if dataset_changed(ws, meta):
        log.warning("Run %s was trained on an earlier version of dataset %r (it was organized again since): "
                    "its routing follows the current version.", run, meta["dataset"])
    bundle_path = ws.export_dir(run)
    bundle = (load_bundle(bundle_path, keys_from=ws.data_dir, trust_unsigned=trust_unsigned)
              if bundle_path.exists() else None)
    if bundle is None and meta.get("export"):
        log.warning("Run %s was exported, but its bundle %s is gone: predicting with its checkpoint (PyTorch). "
                    "Export it again to use the checked ONNX model.", run, bundle_path)
    phase = None if bundle else load_run_phase(ws, run)
    threshold = bundle.card.get("decision_threshold") if bundle else phase.threshold
    try:
        gate = load_gate(bundle.path if bundle else ws.run_dir(run))
    except (ValueError, KeyError, TypeError) as err:
        raise WorkbenchError(f"The out-of-distribution gate of run {run} cannot be read ({err}). Train the run "
                             "again (or export it again).") from err
    if gate is None:
        log.warning("Run %s has no out-of-distribution gate (trained by an older version): images unlike its "
                    "training data cannot be flagged. Train it again to add one.", run)
    return Model(run=run, phase=meta["phase"], classes=list(meta.get("classes", [])), verdict=model_verdict(meta),
                 gate=gate,
                 image_size=int(meta["config"]["image_size"]), clahe=bool(meta["config"].get("clahe", False)),
                 channels=int(meta["config"].get("channels", 1)), multilabel=bool(meta["config"].get("multilabel")),
                 finding_thresholds=(meta.get("calibration") or {}).get("finding_thresholds"),
                 modalities=dominant(counts.get("by_modality", {})), regions=dominant(counts.get("by_region", {})),
                 threshold=threshold, bundle=bundle, _torch=phase)


def model_from_bundle(path: Path, *, keys_from: Path | None = None, trust_unsigned: bool = False) -> Model:
    """A model from an exported bundle alone, with no workspace (the deployment case): its card
    says what it reads, its classes, threshold, verdict and where it was trained; its gate
    travels in the bundle. 3D bundles (cube3d) are not served this way.

    Raises:
        ExportError: the bundle is unsigned, badly signed or changed (see app.bundle.load_bundle).
        WorkbenchError: a 3D bundle, or a gate that cannot be read.
    """
    from core.errors import ExportError

    bundle = load_bundle(Path(path), keys_from=keys_from, trust_unsigned=trust_unsigned)
    card = bundle.card
    if len(card["input"]["shape"]) != 4:
        raise WorkbenchError(f"{path} holds a 3D model ({card['phase']}); serving takes 2D image models.")
    try:
        gate = load_gate(bundle.path)
    except (ValueError, KeyError, TypeError) as err:
        raise ExportError(f"The out-of-distribution gate in {path} cannot be read ({err}). Export the run again.") from err
    verdict = card.get("verdict") or {}
    preprocessing = card["input"].get("preprocessing", {})
    return Model(run=card["name"], phase=card["phase"], classes=list(card["classes"]),
                 verdict=Verdict(verdict.get("level", "unknown"), list(verdict.get("reasons", []))), gate=gate,
                 image_size=int(card["input"]["shape"][-1]), clahe=bool(preprocessing.get("clahe", False)),
                 channels=int(card["input"]["shape"][1]), modalities=list(card.get("modality") or []),
                 multilabel=card.get("task") == "multilabel_classification",
                 finding_thresholds=card.get("finding_thresholds"),
                 regions=list(card.get("region") or []), threshold=card.get("decision_threshold"), bundle=bundle)


def candidate_runs(ws: Workspace) -> list[str]:
    """Finished runs that can answer alone, the best kind first, newest first within a kind
    (a recipe search's hidden runs never: its screening trials and members, ``trial_of``)."""
    routable = routable_phases()  # those that answer "is this image anomalous?" alone, best first
    runs = [m for m in ws.runs() if m.get("status") == "complete" and m.get("phase") in routable
            and not m.get("trial_of")]
    ordered: list[str] = []
    for phase in routable:
        ordered += [m["run"] for m in sorted((m for m in runs if m["phase"] == phase),
                                             key=lambda m: m.get("finished", ""), reverse=True)]
    return ordered


def route(item: Item, models: list[Model], allow_ood: bool = False) -> Model | None:
    """The first model trained on the item's modality and region together (its gate's combinations).

    An item whose region is unknown is routed only with ``allow_ood`` (then unknowns match
    anything known, as do models trained before gates existed).
    """
    if not allow_ood:
        if item.region == "unknown":
            return None
        return next((m for m in models if m.gate is not None and m.gate.covers(item.modality, item.region)),
                    next((m for m in models if m.gate is None and _loosely(item, m)), None))
    return next((m for m in models if _loosely(item, m)), None)


def _loosely(item: Item, model: Model) -> bool:
    """Modality and region each among the model's (unknowns match anything)."""
    modality_ok = item.modality == "OT" or not model.modalities or item.modality in model.modalities
    region_ok = item.region == "unknown" or not model.regions or item.region in model.regions
    return modality_ok and region_ok


# -- prediction ------------------------------------------------------------------------------
def _prepare(item: Item, model: Model) -> np.ndarray:
    from app.data import load_file

    middle = item.files[len(item.files) // 2]
    return load_file(middle, model.image_size, use_clahe=model.clahe, channels=model.channels)


def _answer(item_id: str, item: Item, model: Model, outputs: dict[str, np.ndarray], k: int) -> Prediction:
    found = Prediction(item_id, item.modality, item.region, run=model.run, engine=model.engine,
                       model_verdict=model.verdict.level)
    if "probabilities" in outputs and model.multilabel:
        # Findings, each its own yes/no: those whose probability reaches the finding's threshold
        # (chosen on validation; 0.5 for a run without) are named; the most likely one's
        # probability is how sure the model is that the image shows anything.
        p = outputs["probabilities"][k]
        cuts = model.finding_thresholds or {}
        found.probabilities = {c: round(float(v), 6) for c, v in zip(model.classes, p)}
        named = [c for c, v in zip(model.classes, p) if v >= cuts.get(c, FINDING_CALL)]
        found.predicted_class = "|".join(named) or "no finding"
        found.confidence = found.anomaly_score = float(p.max())
        found.is_anomaly = bool(named)
    elif "probabilities" in outputs:
        p = outputs["probabilities"][k]
        guess = int(p.argmax())
        found.predicted_class, found.confidence = model.classes[guess], float(p[guess])
        found.probabilities = {c: round(float(v), 6) for c, v in zip(model.classes, p)}
        if "normal" in model.classes and "anomaly_score" not in outputs:
            found.anomaly_score = float(1.0 - p[model.classes.index("normal")])
            found.is_anomaly = found.predicted_class != "normal"
    if "anomaly_score" in outputs:
        found.anomaly_score = float(outputs["anomaly_score"][k])
        found.threshold = model.threshold
        if model.threshold is not None:
            found.is_anomaly = found.anomaly_score >= model.threshold
    return found


def predict(ws: Workspace, path: Path, *, run: str | None = None, overlays: bool = True,
            trust_unsigned: bool = False, allow_ood: bool = False, show_names: bool = False,
            progress: Progress | None = None) -> PredictResult:
    """Predict every item under ``path``; write predictions.csv/json (and overlays) under
    ``predictions/<time>/``.

    Items are named by item id; where each is goes into the workspace's private map.
    ``show_names`` adds each file's own base name (a column ``name``), and marks the
    output as holding identifiers (``HOLDS_IDENTIFIERS.txt`` beside it).

    Items outside what a model was trained on (app.ood: a modality/region combination it
    never saw, an unknown region, or an image unlike its training images) get no answer:
    they are marked ``outside`` and counted. ``allow_ood`` answers them anyway (still marked).

    Raises:
        DatasetError: nothing readable under ``path``.
        WorkbenchError: no finished run to predict with (train one first).
    """
    items = find_items(path)
    ids = _item_ids(ws, items)
    chosen = ws.run_metadata(run)["phase"] if run else None
    if chosen and chosen not in routable_phases():
        raise WorkbenchError(f"Run {run!r} is a {chosen} run; predict takes 2D models "
                             f"({', '.join(routable_phases())}). Choose one of: {', '.join(candidate_runs(ws)) or 'none yet'}.")
    names = [run] if run else candidate_runs(ws)
    if not names:
        raise WorkbenchError("No finished model in this workspace. Train one first (Train, or the one-click workflow).")
    models = [load_model(ws, name, trust_unsigned) for name in names]
    results = answer_items(items, ids, models, chosen=bool(run), allow_ood=allow_ood, progress=progress)
    if show_names:
        for found, item in zip(results, items):
            found.name = item.files[len(item.files) // 2].name if item.kind != "dicom_series" else item.files[0].parent.name
    folder = _new_folder(ws.predictions_dir / time.strftime("%Y-%m-%dT%H%M%S"))
    if show_names:
        (folder / "HOLDS_IDENTIFIERS.txt").write_text(
            "These predictions were made with --show-names: the 'name' column holds the input files' own names,\n"
            "which can identify patients. Keep them inside the hospital; share the files without that column.\n",
            encoding="utf-8")
    csv_path, json_path = _write(folder, results, show_names)
    made = _overlays(ws, folder, items, results, models) if overlays else []
    used = {r.run for r in results if r.run}
    return PredictResult(results, folder, csv_path, json_path, made,
                         {m.run: m.verdict.text for m in models if m.run in used},
                         sum(1 for r in results if r.outside), show_names)


def answer_items(items: list[Item], ids: list[str], models: list[Model], *, chosen: bool = False,
                 allow_ood: bool = False, progress: Progress | None = None) -> list[Prediction]:
    """Each item's answer from ``models`` (routed by modality and region; ``chosen``: the one
    model asked for answers all), with the out-of-distribution gate applied; ``ids`` name them."""
    results, by_model = route_items(items, ids, models, chosen=chosen, allow_ood=allow_ood)
    done = 0
    for model in models:
        for start in range(0, len(by_model.get(model.run, [])), 32):
            chunk = by_model[model.run][start : start + 32]
            prepared = prepare_items(chunk, model, results)
            if prepared:
                outputs, distances = score_batch(model, np.concatenate([x for _, _, x in prepared]))
                settle(prepared, model, outputs, distances, results, ids, allow_ood)
            done += len(chunk)
            report(progress, "Predicting", done, len(items))
    return results


def route_items(items: list[Item], ids: list[str], models: list[Model], *, chosen: bool = False,
                allow_ood: bool = False) -> tuple[list[Prediction], dict[str, list[tuple[int, Item]]]]:
    """(a Prediction per item, outside ones already answered; the items each model answers, by run)."""
    results: list[Prediction] = []
    by_model: dict[str, list[tuple[int, Item]]] = {}
    for k, item in enumerate(items):
        model = models[0] if chosen else route(item, models, allow_ood)
        # A model chosen by hand answers for an unknown region (the user vouched for it), but
        # not for a modality/region pair it never saw; the appearance check applies either way.
        if (chosen and not allow_ood and model.gate is not None and item.region != "unknown"
                and not model.gate.covers(item.modality, item.region)):
            model = None
        if model is None:
            results.append(Prediction(ids[k], item.modality, item.region, outside=True,
                                      note=_no_model(item, models)))
        else:
            results.append(Prediction(ids[k], item.modality, item.region))
            by_model.setdefault(model.run, []).append((k, item))
    return results, by_model


def prepare_items(chunk: list[tuple[int, Item]], model: Model,
                  results: list[Prediction]) -> list[tuple[int, Item, np.ndarray]]:
    """Each item's input as ``model`` takes it; an unreadable one gets its reason as a note instead."""
    prepared = []
    for k, item in chunk:
        try:
            prepared.append((k, item, _prepare(item, model)))
        except DatasetError as err:  # the message without the file's place or name
            middle = item.files[len(item.files) // 2]
            why = str(err).replace(str(middle), "the file").replace(str(middle.parent), "the folder")
            results[k].note = why.replace(middle.name, "the file").strip()[:160]
    return prepared


def score_batch(model: Model, batch: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The model's outputs for a batch of prepared inputs, and their out-of-distribution distances."""
    outputs = model.run_batch(batch)
    return outputs, model.gate.distances(batch) if model.gate is not None else None


def settle(prepared: list[tuple[int, Item, np.ndarray]], model: Model, outputs: dict[str, np.ndarray],
           distances: np.ndarray | None, results: list[Prediction], ids: list[str], allow_ood: bool) -> None:
    """Write the answers of ``prepared`` (in batch order) into ``results``, gated."""
    for n, (k, item, _) in enumerate(prepared):
        results[k] = _answer(ids[k], item, model, outputs, n)
        if distances is not None:
            _gate(results[k], float(distances[n]), model.gate.threshold, allow_ood)


def _item_ids(ws: Workspace, items: list[Item]) -> list[str]:
    """Each input's item id; where it is goes into the workspace's private map only."""
    from app.private import item_id

    secret, entries, ids = ws.secret(), {}, []
    for item in items:
        places = [ws.relative(f) for f in item.files]
        middle = places[len(places) // 2]
        ids.append(item_id(secret, middle))
        entries[ids[-1]] = {"path": middle, **({"files": places} if len(places) > 1 else {})}
    ws.private.add(items=entries)
    return ids


def _no_model(item: Item, models: list[Model]) -> str:
    if item.region == "unknown":
        return (f"{OUTSIDE}: its region could not be told, so no model is known to fit it "
                "(--allow-ood routes it by modality alone)")
    trained = "; ".join(f"{m.run}: " + (", ".join(f"{a} {b}" for a, b in m.gate.seen) if m.gate else
                                        f"{'/'.join(m.modalities) or '?'} {'/'.join(m.regions) or '?'}")
                        for m in models)
    return f"{OUTSIDE}: no model was trained on {item.modality} {item.region} images (trained: {trained})"


def _gate(found: Prediction, distance: float, threshold: float, allow_ood: bool) -> None:
    """Mark an answer whose image is unlike the model's training images; withhold it unless allowed."""
    found.ood_distance = round(distance, 3)
    if distance <= threshold:
        return
    found.outside = True
    found.note = f"{OUTSIDE}: unlike its training images (distance {distance:.1f} > {threshold:.1f})"
    if not allow_ood:
        found.predicted_class, found.confidence, found.probabilities = "", None, {}
        found.anomaly_score, found.is_anomaly = None, None


def _new_folder(wanted: Path) -> Path:
    """``wanted``, or ``wanted-2``, ``-3``...: an earlier prediction is never overwritten."""
    wanted.parent.mkdir(parents=True, exist_ok=True)
    for k in range(1, 1000):
        folder = wanted if k == 1 else wanted.with_name(f"{wanted.name}-{k}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise WorkbenchError(f"Too many prediction folders named {wanted.name}* in {wanted.parent}.")


def _write(folder: Path, results: list[Prediction], show_names: bool = False) -> tuple[Path, Path]:
    import csv

    keys = [k for k in Prediction.__dataclass_fields__ if k != "probabilities" and (show_names or k != "name")]
    csv_path = folder / "predictions.csv"
    tmp = temp_sibling(csv_path)
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=keys)
            writer.writeheader()
            for r in results:
                writer.writerow({k: as_text(getattr(r, k)) for k in keys})
        os.replace(tmp, csv_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    json_path = folder / "predictions.json"
    rows = [{k: as_text(v) for k, v in asdict(r).items() if show_names or k != "name"} for r in results]
    write_state(json_path, Kind.PREDICTIONS, {"created": now_iso(), "results": rows,
                                              **({"holds_identifiers": True} if show_names else {})})
    return csv_path, json_path


def _overlays(ws: Workspace, folder: Path, items: list[Item], results: list[Prediction],
              models: list[Model]) -> list[Path]:
    """Grad-CAM (classifiers) or residual (VAE, hybrid) maps for up to 12 predicted items,
    drawn with the PyTorch weights when the run's checkpoint is in the workspace; a scorer
    with a patch view adds ``overlay_<run>_patch.png``, where patches are unlike any normal one."""
    import torch

    from app.explain import for_display, heat_grid, vae_scorer
    from app.training import load_run_phase

    made = []
    for model in models:
        pairs = [(item, r) for item, r in zip(items, results) if r.run == model.run]
        chosen = pairs[:: max(1, len(pairs) // 12)][:12]  # spread over the input, not its first folder
        if not chosen or not (ws.run_dir(model.run) / "best.pt").exists():
            continue
        phase = model._torch or load_run_phase(ws, model.run)
        images = torch.from_numpy(np.concatenate([_prepare(item, model) for item, _ in chosen]))
        scorer = vae_scorer(phase)
        local = None
        if scorer is not None:
            with torch.no_grad():
                maps = scorer.maps(images)[:, 0].numpy()
                local = scorer.patch_maps(images)[:, 0].numpy() if getattr(scorer, "patch", 0) else None
            maps = maps / (float(np.percentile(maps, 99.5)) or 1.0)
        elif phase.gradcam_target():
            from monai.visualize import GradCAM

            cam = GradCAM(nn_module=phase.model, target_layers=phase.gradcam_target(images.shape[-1]))
            maps = np.stack([cam(x=images[k : k + 1]).detach()[0, 0].numpy() for k in range(len(images))])
        else:
            continue
        # Pixels cannot be searched for identifiers later: the titles carry the row number in
        # predictions.csv and the answer, never a file or folder name (they often hold patient names).
        row_of = {id(r): n for n, r in enumerate(results, 1)}
        titles = [f"row {row_of[id(r)]}\n{'outside' if r.outside else (r.predicted_class or '')} "
                  f"{'ANOMALY' if r.is_anomaly else ''}".strip() for _, r in chosen]
        path = folder / f"overlay_{model.run}.png"
        scale = ("difference from the model's reconstruction (1: the most in these images)" if scorer is not None
                 else "where the predicted class was read (Grad-CAM, 0-1)")
        heat_grid(for_display(images.numpy()), np.clip(maps, 0, 1), titles, path, f"Predictions of {model.run}", scale=scale)
        made.append(path)
        if local is not None:  # distances of 1 are a normal patch's; the scale tops at the worst found
            local = local / max(float(np.percentile(local, 99.5)), 1.0)
            made.append(heat_grid(for_display(images.numpy()), np.clip(local, 0, 1), titles,
                                  folder / f"overlay_{model.run}_patch.png",
                                  f"Predictions of {model.run}: patches unlike any normal one",
                                  scale="patch distance to the nearest normal patch (1: the most here)"))
    return made


def as_text(value: Any) -> Any:
    """Strings as valid UTF-8 text: a file name that is not (undecodable bytes) gets U+FFFD for them."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value
