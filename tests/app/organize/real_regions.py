"""What region each real image under ../shared/data shows, and neutral copies that hide it.

The truth comes from the files' own tags and sources (regions/README.md) and, for the
COVID-19-NY-SBU slices, from looking at them: eight of those twenty "chest CT" slices
are abdominal (kidneys, bowel, liver below the lungs), although their studies say chest.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

REGION_FOLDERS = {
    "brain_head": "brain", "neck": "neck", "chest": "chest", "cardiac": "cardiac", "abdomen": "abdomen",
    "pelvis": "pelvis", "spine": "spine", "upper_extremity": "bone", "lower_extremity": "bone", "breast": "breast",
}
ABDOMINAL_COVID_SLICES = {
    "A027284_19000925-116.dcm", "A027284_19001231-131.dcm", "A058062_19001231-084.dcm", "A058062_19010108-078.dcm",
    "A062055_19001127-136.dcm", "A062055_19001228-131.dcm", "A067967_19001006-028.dcm", "A067967_19001231-270.dcm",
}
# Tags that say the region in words: what a neutral copy leaves out (the modality stays).
DESCRIPTIVE_TAGS = ("BodyPartExamined", "StudyDescription", "SeriesDescription", "ProtocolName",
                    "WindowCenterWidthExplanation", "ImageComments", "RequestedProcedureDescription",
                    "PerformedProcedureStepDescription")


def true_region(path: Path, data: Path) -> str | None:
    """The region ``path`` shows, or None for files that are not images of ours to judge."""
    parts = path.relative_to(data).parts
    if parts[0] == "regions" and len(parts) > 2:
        return REGION_FOLDERS.get(parts[1])
    if parts[0] == "xray":
        return "chest"
    if parts[0] == "nifti":
        return "brain"
    if parts[0] == "dicom":
        folder = parts[1]
        if folder == "ct_chest_covid_slices":
            return "abdomen" if path.name in ABDOMINAL_COVID_SLICES else ("chest" if path.suffix == ".dcm" else None)
        if folder == "ct_head_jpeg":
            return None  # deid-data's two "CT head" test files hold a line drawing of a face: no anatomy to tell
        if folder == "mr_brain_t1w_series":
            return "brain" if path.suffix == ".dcm" else None
        if folder == "mixed_cta_cr_mr":
            if "CR" in path.name:
                return "chest"
            return "cardiac" if path.name.startswith("osirix") else "brain"
    return None


PREFIX_MODALITY = {"ct": "CT", "mr": "MR", "xr": "XR", "us": "US", "mg": "MG", "xa": "XA", "nm": "NM"}


def true_modality(path: Path, data: Path) -> str | None:
    """The modality of ``path`` (regions/: its name's prefix; the rest: its folder)."""
    parts = path.relative_to(data).parts
    if parts[0] == "regions" and len(parts) > 2:
        return PREFIX_MODALITY.get(path.name.split("_")[0])
    if parts[0] == "xray" or "CR" in path.name:
        return "XR"
    if parts[0] == "nifti" or path.name.startswith("bbmri") or parts[1:2] == ("mr_brain_t1w_series",):
        return "MR"
    return "CT" if true_region(path, data) else None


def image_files(data: Path) -> list[Path]:
    """Every image file under ``data`` whose region is known."""
    return [p for p in sorted(data.rglob("*")) if p.is_file() and true_region(p, data)]


def source_of(path: Path, data: Path) -> tuple[Path, str]:
    """The files that came from one source together: a folder of ours, or under regions/
    (a folder per region, each file from another collection) one file or one numbered
    series (ct_colonography_..._01, _02, _03). A neutral copy keeps a source in one folder;
    keeping a regions/ folder whole would hand the organizer's sibling rule the truth."""
    if path.relative_to(data).parts[0] != "regions":
        return path.parent, ""
    return path.parent, re.sub(r"\d+$", "", path.name.split(".")[0])


def neutral_copy(data: Path, target: Path) -> dict[str, tuple[str, str]]:
    """Copy every image under neutral names (``itemNN/fileK``, extension kept), DICOM files without
    their descriptive tags; the files of one source stay together (a series stays a series;
    ``source_of``). Returns copied path -> (true region, the original's path under ``data``)."""
    from app.imaging import open_dicom

    truth: dict[str, tuple[str, str]] = {}
    folders: dict[tuple[Path, str], Path] = {}
    for k, path in enumerate(image_files(data)):
        folder = folders.setdefault(source_of(path, data), target / f"item{len(folders):02d}")
        folder.mkdir(parents=True, exist_ok=True)
        suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
        copy = folder / f"file{k:03d}{suffix}"
        if suffix.lower() in (".dcm", ""):
            ds = open_dicom(path)
            present = [t for t in DESCRIPTIVE_TAGS if t in ds]
            for tag in present:
                delattr(ds, tag)
            if present:
                ds.save_as(copy)
            else:
                shutil.copyfile(path, copy)
        else:
            shutil.copyfile(path, copy)
        truth[str(copy)] = (true_region(path, data) or "", str(path.relative_to(data)))
    return truth


def recentred(values, spacing: float, centre: tuple[float, float], fov_mm: float):
    """A square field of ``fov_mm`` around ``centre`` (row, column) of a CT slice in HU, as a
    scanner reconstructs a spine- or heart-centred series from the same acquisition (air
    where it reaches past the original image)."""
    import numpy as np

    half = int(fov_mm / spacing / 2)
    padded = np.pad(values, half, constant_values=-1024)
    row, column = int(centre[0]), int(centre[1])
    return padded[row : row + 2 * half, column : column + 2 * half]


def vertebra_and_heart(values, spacing: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """Where a spine and a heart reconstruction of a whole-body axial slice would be centred:
    the largest bone (over 250 HU) in the lower middle of the body, and a point 45% of the
    way down the body, 1.5 cm to the image's right of its middle (the heart lies left)."""
    import numpy as np
    from scipy import ndimage as ndi

    from app.organize.anatomy import _body

    body = _body(values > -500)
    h, w = values.shape
    bone = (values > 250) & body
    bone[: h // 2], bone[:, : int(w * 0.35)], bone[:, int(w * 0.65) :] = False, False, False
    labels, count = ndi.label(bone)
    sizes = ndi.sum(bone, labels, range(1, count + 1))
    vertebra = ndi.center_of_mass(labels == int(np.argmax(sizes)) + 1)
    rows, columns = np.nonzero(body.any(axis=1))[0], np.nonzero(body.any(axis=0))[0]
    heart = (rows[0] + 0.45 * (rows[-1] - rows[0]), (columns[0] + columns[-1]) / 2 + 15 / spacing)
    return vertebra, heart
