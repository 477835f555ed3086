"""The region from the pixels, on real images whose names and tags say nothing of it.

Every real image under ../shared/data is copied under a neutral name (item03/file017.dcm),
its descriptive DICOM tags removed (tests/app/organize/real_regions.py); what the
organizer then finds can only come from the pixels.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app.organize.organizer import organize
from app.organize.rows import read_rows, row_place
from tests.app.organize.real_regions import ABDOMINAL_COVID_SLICES, neutral_copy
from tests.conftest import shared


def _rows(ws, name: str) -> list[dict]:
    out = ws.organized_path(name)
    rows = read_rows(out / "labeled.csv") + read_rows(out / "unlabeled.csv")
    for row in rows:
        files = ws.private.item(row["item"]).get("files") or [row_place(ws, row)]
        row["place"] = str(ws.resolve(files[len(files) // 2]).resolve())
    return rows


@pytest.fixture(scope="module")
def neutral(tmp_path_factory) -> dict[str, dict]:
    """Original path under ../shared/data -> its row, organized from a neutral copy."""
    from app.workspace import Workspace

    data = shared("regions").parent
    target = tmp_path_factory.mktemp("neutral")
    copies = {str(Path(k).resolve()): v for k, v in neutral_copy(data, target / "copy").items()}
    ws = Workspace.open(target / "ws")
    organize(ws, target / "copy", "neutral", workers=2)
    return {copies[r["place"]][1]: {**r, "truth": copies[r["place"]][0]} for r in _rows(ws, "neutral")}


def test_nothing_in_the_neutral_copies_names_the_region(neutral) -> None:
    """Only the pixels and coded tags a neutral copy keeps: Modality, the storage class, the view
    and the image type (an ultrasound's exam type, a defined term of the standard)."""
    assert {r["region_rule"] for r in neutral.values()} <= {"pixels", "none", "sibling_agreement", "mammography",
                                                             "dicom_image_type"}


@pytest.mark.parametrize("name, region", [
    ("regions/cardiac/us_stress_echo_US-MONO2-8-8x-execho.dcm", "cardiac"),  # ORIGINAL\PRIMARY\TTE\0001
    ("regions/cardiac/us_tee_US-RGB-8-esopecho.dcm", "cardiac"),  # ...\TEE\0011
    ("regions/upper_extremity/us_elbow_left_dcm4che_YBR_422.dcm", "bone"),  # ...\MUSCULOSKELETAL\0001, 4:2:2 colour
])
def test_an_ultrasound_is_placed_by_the_exam_its_image_type_names(neutral, name, region) -> None:
    assert (neutral[name]["modality"], neutral[name]["region"], neutral[name]["region_rule"]) == (
        "US", region, "dicom_image_type")


@pytest.mark.parametrize("name", sorted(f"dicom/ct_chest_covid_slices/{n}" for n in (
    "A002304_19001231-076.dcm", "A046441_19001111-045.dcm", "A046441_19010101-23.dcm", "A056642_19001229-053.dcm",
    "A072894_19001203-066.dcm", "A098752_19010127-128.dcm", *ABDOMINAL_COVID_SLICES)))
def test_ct_slices_are_told_chest_or_abdomen_even_with_diseased_lungs(neutral, name) -> None:
    row = neutral[name]
    assert (row["modality"], row["region"]) == ("CT", row["truth"])


@pytest.mark.parametrize("name", [
    "xray/chest_samples/00000001_000.png", "xray/chest_samples/16747_3_1.jpg", "xray/chest_samples/h0001.png",
    "xray/chest_samples/tb0005.png", "xray/chest_samples/covid-19-pneumonia-58-prior.jpg",
    "xray/chest_samples/1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm",
    "dicom/mixed_cta_cr_mr/gdcm-CR-MONO1-10-chest.dcm",
])
def test_chest_radiographs_are_chest(neutral, name) -> None:
    assert neutral[name]["region"] == "chest"


@pytest.mark.parametrize("name", [
    "nifti/eun_uchar_8.nii.gz", "nifti/KmeansTest_T1UCharRaw.nii.gz",
    "regions/brain_head/mr_brain_t1gd_TCGA-02-0003_pyradiomics_brain1.nrrd",
    "regions/brain_head/mr_head_flair_ge_MR-MONO2-16-head.dcm", "regions/brain_head/ct_head_picker_CT-MONO2-16-brain.dcm",
    "regions/brain_head/ct_head_toshiba_WG04_CT2.dcm", "dicom/mixed_cta_cr_mr/bbmri-53323419.dcm",
    "regions/brain_head/mr_brain_philips_WG04_MR4.dcm",
])
def test_heads_are_brain(neutral, name) -> None:
    """The Philips one is a phase-sensitive inversion recovery in black side bars: its air is
    mid-grey (tissue both sides of it) and the bars are darker than anything in the head."""
    assert neutral[name]["region"] == "brain"


def test_bars_round_a_picture_are_trimmed_but_a_black_background_is_kept() -> None:
    """Pillarbox bars darker than the picture go; an MR whose air is 0 like its bars is kept
    whole (its outline needs the air round it)."""
    import numpy as np

    from app.organize.anatomy import mr_head, unpadded

    yy, xx = np.mgrid[:256, :256]
    head = (((yy - 128) / 100) ** 2 + ((xx - 128) / 85) ** 2 < 1) * 800.0
    grey_air = head + 300  # a picture whose air is not the darkest value
    barred = np.pad(grey_air, ((0, 0), (64, 64)), constant_values=0)
    assert unpadded(barred).shape == grey_air.shape
    assert unpadded(np.pad(head, ((0, 0), (64, 64)))).shape == (256, 384)  # air 0, like the bars
    assert mr_head(unpadded(barred), 0.9, None)


@pytest.mark.parametrize("name", ["dicom/mixed_cta_cr_mr/osirix-goudurix.dcm",
                                  "dicom/mixed_cta_cr_mr/osirix-toutatix-100.dcm"])
def test_a_heart_centred_ct_reconstruction_is_cardiac(neutral, name) -> None:
    """Coronary CTA slices whose 20-25 cm field of view cuts the chest: lung either side of
    the heart. A full chest slice (the COVID ones above, 32-49 cm) stays chest."""
    assert (neutral[name]["modality"], neutral[name]["region"]) == ("CT", "cardiac")


def test_a_heart_centred_field_is_told_from_a_whole_chest_and_from_a_crop() -> None:
    from app.organize.anatomy import _dicom_values, heart_centred

    values, spacing = _dicom_values(shared("dicom/mixed_cta_cr_mr/osirix-goudurix.dcm"))  # 512 px at 0.39 mm
    assert spacing and heart_centred(values, spacing)
    assert not heart_centred(values, 0.2)  # 10 cm: a crop around a nodule, not a reconstruction of the heart
    assert not heart_centred(values, 0.7)  # 36 cm: a field that shows the whole chest
    assert not heart_centred(values, None)
    assert not heart_centred(values[:, : values.shape[1] // 2], spacing * 2)  # one lung only: no heart between


def test_a_spine_centred_ct_reconstruction_is_spine(neutral) -> None:
    """A lumbar CT reconstructed on the vertebra (a 20 cm field cutting the body)."""
    row = neutral["regions/spine/ct_lumbar_siemens_CT-MONO2-12-lomb-an2.dcm"]
    assert (row["modality"], row["region"]) == ("CT", "spine")


def test_spine_and_heart_reconstructions_of_real_slices_are_told_apart() -> None:
    """Each whole-body chest and abdomen slice here re-centred as a scanner reconstructs a
    series, on its vertebra and on its heart, at 16, 20 and 25 cm. A thoracic spine field
    also has lung either side of its middle: before the vertebra rule 31 of the 84 spine
    fields were called cardiac (the rest unknown). Measured (session 25): spine fields 83 of 84 spine, 1 cardiac (a 25 cm field
    whose vertebra joins its ribs: 30 cm2 of bone); heart fields never spine."""
    from app.organize.anatomy import _dicom_values, ct_slice_region
    from tests.app.organize.real_regions import recentred, vertebra_and_heart

    folder = shared("dicom/ct_chest_covid_slices")
    slices = [*sorted(folder.glob("*.dcm")), *sorted(shared("regions/abdomen").glob("ct_*.dcm"))]
    spine, heart = [], []
    for path in slices:
        values, spacing = _dicom_values(path)
        if values.min() > -700:  # an 8-bit export without Hounsfield units
            continue
        vertebra, middle = vertebra_and_heart(values, spacing)
        for fov in (160, 200, 250):
            spine.append(ct_slice_region(recentred(values, spacing, vertebra, fov), spacing))
            if "abdo" not in path.parent.name and path.name not in ABDOMINAL_COVID_SLICES:
                heart.append(ct_slice_region(recentred(values, spacing, middle, fov), spacing))
    assert len(spine) >= 75 and spine.count("spine") >= 0.95 * len(spine) and spine.count("cardiac") <= 1, spine
    assert "spine" not in heart and heart.count("cardiac") >= len(heart) // 3, heart


def test_a_nifti_ct_is_ct_by_its_hounsfield_values(neutral) -> None:
    row = neutral["regions/abdomen/ct_spleen_MSD_ivadomed_sub-spleen2_ct.nii.gz"]
    assert (row["modality"], row["modality_rule"]) == ("CT", "hounsfield_values")


def test_a_mammogram_is_breast_by_its_view_and_an_unlabelled_volume_mr_by_its_values(neutral) -> None:
    mammogram = neutral["regions/breast/mg_mlo_left_WG04_MG1.dcm"]  # Modality RG, ViewPosition MLO
    assert (mammogram["modality"], mammogram["region"]) == ("MG", "breast")
    for name in ("regions/brain_head/mr_brain_t1gd_TCGA-02-0003_pyradiomics_brain1.nrrd",
                 "regions/breast/mr_breast_pre_pyradiomics_breast1.nrrd"):
        assert (neutral[name]["modality"], neutral[name]["modality_rule"]) == ("MR", "volume_not_hounsfield")


def test_a_header_that_hints_at_ct_is_checked_on_the_pixels(neutral) -> None:
    """An MR exported by a viewer as a secondary capture with the CT-like intercept -1024:
    no air at -1000 HU, so not CT; its outline is still a head."""
    row = neutral["regions/brain_head/mr_brain_t1_osirix_cerebrix.dcm"]
    assert (row["modality"], row["modality_rule"], row["region"]) == ("OT", "pixels_not_hounsfield", "brain")
    assert all(r["modality"] == "CT" for name, r in neutral.items() if "ct_chest_covid_slices" in name)


def test_the_pixels_never_name_a_wrong_region_where_the_image_is_clear(neutral) -> None:
    """Unknown is allowed (the review shows it); a wrong region is not. The hardest: a CT
    colonography series cut at the liver dome, whose slices are a fifth lung (the bases,
    behind the liver): abdomen."""
    wrong = {name for name, r in neutral.items() if r["region"] not in ("unknown", r["truth"])}
    assert not wrong, wrong
    assert neutral["regions/abdomen/ct_colonography_dcmqi_ct-3slice_02.dcm"]["region"] == "abdomen"
    decided = [r for r in neutral.values() if r["region"] != "unknown"]
    assert len(decided) >= 50, f"{len(decided)} of {len(neutral)} decided from the pixels"


def test_a_study_described_as_chest_and_abdomen_is_what_its_slices_show(ws) -> None:
    """'CT ABD AND PELVIS' with ProtocolName 'CHEST PELVIS', slices at kidney level: abdomen,
    every region named kept, the main one first."""
    data = shared("dicom/ct_chest_covid_slices")
    organize(ws, data, "covid", workers=1)
    rows = {Path(r["place"]).name: r for r in _rows(ws, "covid")}
    row = rows["A027284_19000925-116.dcm"]
    assert (row["region"], row["region_rule"]) == ("abdomen", "description_and_pixels")
    assert row["regions"].split("|")[0] == "abdomen" and set(row["regions"].split("|")) == {"abdomen", "chest", "pelvis"}
    chest = rows["A002304_19001231-076.dcm"]  # "CT ABD AND PELVIS", series "CHEST 2.5 MM/ABD.PEL": the lungs
    assert (chest["region"], chest["region_rule"]) == ("chest", "description_and_pixels")
    assert sum(r["region"] == "abdomen" for r in rows.values()) == len(ABDOMINAL_COVID_SLICES)


def test_a_large_folder_is_judged_on_a_sample_that_must_agree(ws, tmp_path: Path, monkeypatch) -> None:
    import shutil

    from app.organize import pixel_rules

    films = [shared("xray/chest_samples") / n for n in ("00000001_000.png", "00027426_000.png", "tb0005.png")]
    (tmp_path / "batch").mkdir()
    for k in range(12):
        shutil.copyfile(films[k % 3], tmp_path / "batch" / f"scan_{k:02d}.png")
    reads = []
    real = pixel_rules.read_pixels
    monkeypatch.setattr(pixel_rules, "read_pixels", lambda paths, kind: reads.append(paths) or real(paths, kind))
    organize(ws, tmp_path / "batch", "films", workers=1)
    rows = _rows(ws, "films")
    assert {r["region"] for r in rows} == {"chest"} and len(reads) == pixel_rules.SAMPLE
    assert sorted(r["region_rule"] for r in rows).count("sibling_agreement") == 12 - pixel_rules.SAMPLE


def test_a_film_the_pixels_cannot_place_takes_the_region_its_folder_agrees_on(ws, tmp_path: Path) -> None:
    """A folder of real chest films named by number, with the CT scout of a chest among them
    (a film the pixel rule leaves unknown: its heart shadow covers the left lung): the
    other films agree on chest, so the scout is chest too, by the weaker sibling rule."""
    import shutil

    import numpy as np
    from PIL import Image

    from app.imaging import open_dicom

    films = tmp_path / "films"
    films.mkdir()
    for path in sorted(shared("xray/chest_samples").iterdir()):
        if path.suffix in (".png", ".jpg"):
            shutil.copyfile(path, films / path.name)
    ds = open_dicom(shared("regions/chest/ct_scout_chest_ge_CT-MONO2-16-chest.dcm"))
    values = ds.pixel_array.astype(float)
    low, high = np.percentile(values, [1, 99])
    Image.fromarray((np.clip((values - low) / (high - low), 0, 1) * 255).astype(np.uint8)).save(films / "00031337_000.png")
    organize(ws, films, "films", workers=1)
    rows = {Path(r["place"]).name: r for r in _rows(ws, "films")}
    scout = rows["00031337_000.png"]
    assert (scout["region"], scout["region_rule"], float(scout["region_confidence"])) == ("chest", "sibling_agreement", 0.4)
    assert all(r["region_rule"] != "sibling_agreement" for name, r in rows.items() if name != "00031337_000.png")


def test_siblings_place_nothing_when_they_disagree_are_few_or_are_series() -> None:
    from app.organize.pixel_rules import agree_with_siblings

    def rows(*regions: str, modality: str = "XR") -> list[dict]:
        return [{"region": r, "regions": "" if r == "unknown" else r, "modality": modality, "region_rule": "x",
                 "region_confidence": 0.5} for r in regions]

    def files(n: int, folder: str = "a", each: int = 1) -> list[list[str]]:
        return [[f"/{folder}/{k}-{j}.png" for j in range(each)] for k in range(n)]

    agreed = rows("chest", "chest", "chest", "unknown")
    assert agree_with_siblings(agreed, files(4)) == 1 and agreed[3]["region"] == "chest"
    assert agreed[3]["region_rule"] == "sibling_agreement" and agreed[3]["regions"] == "chest"
    for found, where in (
        (rows("chest", "chest", "abdomen", "chest", "unknown"), files(5)),  # they disagree
        (rows("chest", "chest", "unknown"), files(3)),  # two are too few
        (rows("chest", "chest", "chest", "unknown", "unknown", "unknown"), files(6)),  # the unknown ones are as many
        (rows("chest", "chest", "chest", "unknown"), files(3) + files(1, "b")),  # another folder
        (rows("chest", "chest", "chest") + rows("unknown", modality="US"), files(4)),  # another modality
        (rows("chest", "chest", "chest", "unknown"), files(4, each=20)),  # series: a study folder mixes regions
    ):
        assert agree_with_siblings(found, where) == 0 and found[-1]["region"] == "unknown"
