"""Shared fixtures: throwaway workspaces, a small organized demo dataset, ../shared/data."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

from app.workspace import Workspace  # noqa: E402


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked ``gpu`` run where PyTorch sees a CUDA device and skip, with the reason, elsewhere.
    The rest of the suite runs on whatever MEDANOMALY_DEVICE says (default: a GPU when there is one)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none visible to PyTorch here); run on a GPU machine "
                                   "with MEDANOMALY_DEVICE=cuda ./test.sh -m gpu")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def shared(relative: str) -> Path:
    """A path under ../shared/data, or skip the test when it is not there."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"{path} is absent (the real-data folder ../shared/data sits beside CI's clone only)")
    return path


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace.open(tmp_path / "ws")


@pytest.fixture(scope="session")
def demo_ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A workspace with the demo data (scale 1) collected and organized as 'demo'."""
    from app.collectors import collect
    from app.organize.organizer import organize

    workspace = Workspace.open(tmp_path_factory.mktemp("demo_ws"))
    collect("demo", workspace, scale=1)
    organize(workspace, "demo", "demo", workers=1)
    return workspace


def copy_of_demo(demo_ws: Workspace, dest: Path) -> Workspace:
    """A workspace at ``dest`` with what ``demo_ws`` was made with (its data), without the runs,
    bundles and predictions other tests have since added to it: those are gigabytes, and a copy
    that carried them would depend on which tests ran first."""
    later = {demo_ws.runs_dir.name, demo_ws.exports_dir.name, demo_ws.predictions_dir.name, "backups"}
    shutil.copytree(demo_ws.root, dest, symlinks=True,
                    ignore=lambda folder, names: [n for n in names if Path(folder) == demo_ws.root and n in later])
    return Workspace.open(dest)


def planted_phi(raw: Path) -> set[str]:
    """The fake names, birth dates and identifiers the demo wrote into its DICOM headers."""
    import pydicom
    from pydicom.misc import is_dicom

    found: set[str] = set()
    for path in raw.rglob("*"):
        if path.is_file() and is_dicom(path):
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            name = str(ds.PatientName)
            found |= {name, *name.split("^"), ds.PatientBirthDate, ds.PatientID, ds.AccessionNumber}
    return {v for v in found if len(v) >= 4}


def workspace_files_without_raw(ws: Workspace) -> list[Path]:
    """Every file the app wrote into a workspace, less the raw inputs themselves and the
    private map back to them (data/private/: it holds their paths by design)."""
    raw, private = ws.raw_dir.resolve(), (ws.data_dir / "private").resolve()
    return [p for p in ws.root.rglob("*")
            if p.is_file() and raw not in p.resolve().parents and private not in p.resolve().parents]


def placed(ws: Workspace, rows: list[dict]) -> list[dict]:
    """``rows`` with the ``path`` each item id stands for (from the private map), for assertions."""
    from app.organize.rows import row_place

    return [{**row, "path": row_place(ws, row)} for row in rows]


def small_dicom(path: Path, rows: int, columns: int, pixel_bytes: bytes, **elements) -> Path:
    """A small uncompressed DICOM image (CT, 16-bit grey unless ``elements`` say otherwise)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID, ds.PatientID = "CT", generate_uid(), "P1"
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = rows, columns, 16, 16, 15
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, "MONOCHROME2", 0
    for key, value in elements.items():
        setattr(ds, key, value)
    ds.PixelData = pixel_bytes
    ds.save_as(path, enforce_file_format=True)
    return path


def skipped_places(ws: Workspace, report: dict, root: Path) -> dict[str, str]:
    """A scan report's skipped files as {path under ``root``: reason} (through the private map)."""
    return {str(ws.private.path_of(s["item"]).relative_to(root.resolve())): s["reason"] for s in report["skipped"]}


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `medanomaly` command of a wheel built from this checkout and installed into a fresh
    virtual environment (as `pip install .` gives a user). The wheel is built from a copy of
    the sources, so the checkout gets no build/ or egg-info; its dependencies come from the
    test environment (a .pth file), as the machines here cannot download them."""
    import shutil
    import site
    import subprocess

    work = tmp_path_factory.mktemp("packaging")
    source = work / "source"
    for name in ("app", "core", "menus", "models", "web"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    run = lambda *command: subprocess.run(command, capture_output=True, text=True, timeout=600)  # noqa: E731
    built = run(sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                "--no-index", "-w", str(work / "dist"), "-q")
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = (work / "dist").glob("medanomaly_workbench-*.whl")
    venv = work / "venv"
    made = run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    assert made.returncode == 0, made.stderr
    [packages] = venv.glob("lib/python*/site-packages")
    (packages / "test-dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    pip_done = run(str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel))
    assert pip_done.returncode == 0, pip_done.stdout + pip_done.stderr
    return venv / "bin" / "medanomaly"
