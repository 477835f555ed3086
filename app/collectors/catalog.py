"""A curated catalog of public datasets this tool collects in one step.

Each entry names the collector and its options, so choosing it starts the download.
Licences are as the sources list them; check the source page before use, and cite
the dataset's paper in any publication.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CatalogEntry:
    key: str
    title: str
    collector: str
    options: dict[str, Any] = field(default_factory=dict)
    size: str = ""
    modality: str = ""
    region: str = ""
    labels: str = ""
    licence: str = ""
    good_for: str = ""
    page: str = ""


CATALOG = (
    CatalogEntry(
        "nih-chestxray14", "NIH ChestX-ray14", "nih", {"archives": 12},
        size="42 GB (12 archives; --archives N for fewer)", modality="XR", region="chest",
        labels="14 findings (multi-label) or No Finding; 30,805 patients; official test list",
        licence="NIH Clinical Center: public, no restriction; cite Wang et al. CVPR 2017",
        good_for="large-scale supervised findings; VAE on 'No Finding' images", page="https://nihcc.app.box.com/v/ChestXray-NIHCC",
    ),
    CatalogEntry(
        "chest-xray-pneumonia", "Chest X-Ray Images (Pneumonia), Guangzhou pediatric", "kaggle",
        {"dataset": "paultimothymooney/chest-xray-pneumonia"},
        size="1.2 GB", modality="XR", region="chest", labels="normal / pneumonia (5,863 images)",
        licence="as listed on Kaggle: CC BY 4.0 (Kermany et al., Cell 2018)",
        good_for="a first binary classifier; VAE trained on the normals",
        page="https://www.kaggle.com/datasets/paultimothymooney/chest-xray-pneumonia",
    ),
    CatalogEntry(
        "brain-tumor-mri", "Brain tumour MRI (glioma, meningioma, pituitary, none)", "kaggle",
        {"dataset": "masoudnickparvar/brain-tumor-mri-dataset"},
        size="150 MB", modality="MR", region="brain", labels="4 classes (7,023 slices)",
        licence="as listed on Kaggle: CC0 (compiled from figshare, SARTAJ and Br35H)",
        good_for="multi-class; open-set tests (hold one tumour type out)",
        page="https://www.kaggle.com/datasets/masoudnickparvar/brain-tumor-mri-dataset",
    ),
    CatalogEntry(
        "breast-ultrasound", "Breast ultrasound images (BUSI)", "kaggle",
        {"dataset": "aryashah2k/breast-ultrasound-images-dataset"},
        size="200 MB", modality="US", region="breast", labels="normal / benign / malignant (780 images, masks)",
        licence="as listed on Kaggle: CC0 (Al-Dhabyani et al., Data in Brief 2020)",
        good_for="small-data supervised and transfer learning; lesion masks",
        page="https://www.kaggle.com/datasets/aryashah2k/breast-ultrasound-images-dataset",
    ),
    CatalogEntry(
        "lidc-idri", "LIDC-IDRI lung CT (TCIA), first 20 patients", "tcia",
        {"collection": "LIDC-IDRI", "modality": "CT", "max_patients": 20},
        size="about 3 GB for 20 patients (124 GB in all)", modality="CT", region="chest",
        labels="lung nodules annotated by 4 radiologists (XML, separate)",
        licence="CC BY 3.0 (TCIA data usage policy)",
        good_for="3D cubes around nodules (cube3d phase)", page="https://www.cancerimagingarchive.net/collection/lidc-idri/",
    ),
    CatalogEntry(
        "pancreas-ct", "Pancreas-CT (TCIA): 80 contrast CT scans", "tcia",
        {"collection": "Pancreas-CT", "modality": "CT"},
        size="about 10 GB", modality="CT", region="abdomen", labels="normal pancreas (labels as NIfTI, separate)",
        licence="CC BY 3.0 (TCIA data usage policy)",
        good_for="normal 3D anatomy for a normality model; 3D loading", page="https://www.cancerimagingarchive.net/collection/pancreas-ct/",
    ),
)


def catalog_entry(key: str) -> CatalogEntry:
    """Raises CollectError for a key not in the catalog."""
    from core.errors import CollectError

    for entry in CATALOG:
        if entry.key == key:
            return entry
    raise CollectError(f"No catalog entry {key!r}; the catalog holds: {', '.join(e.key for e in CATALOG)}.")


def collect_entry(workspace: Any, key: str, **extra: Any) -> Any:
    """Start the download of a catalog entry with its collector."""
    from app.collectors import collect

    entry = catalog_entry(key)
    return collect(entry.collector, workspace, **{**entry.options, "name": entry.key, **extra})
