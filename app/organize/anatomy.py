"""The body region from the pixels, when no tag, description or name tells it.

Each rule reads what a radiologist reads first, and answers only when it is clear:

- CT in Hounsfield units, per slice: a closed ring of bone around soft tissue is a
  skull (brain); aerated lung (under -300 HU: ground glass counts) over a tenth of the
  body's cross-section, not in its front third (bowel gas) and a third of it in front of
  the body's middle (not the lung bases behind the liver dome), is the chest; a body at least
  20 cm wide with neither is the abdomen. A series is judged on three slices (a
  quarter, half and three quarters of the way), and the region most of them show is
  the main one; every region seen is kept (``regions``), by how many slices show it.
  A field of view that cuts the body, narrower than an adult chest and wider than a crop
  (15-26 cm), with lung either side of soft tissue in its middle, is a heart-centred
  reconstruction: cardiac; one up to 26 cm wide with a vertebra at its middle (bone with a
  cortex and marrow, 4-30 cm2: not the even brightness of contrast-filled blood) is a
  spine-centred one: spine.
- Radiographs (XR, and 2D pictures that look like one): two dark lung fields either
  side of a bright mediastinum, on the rows where lungs are, is a chest film.
- MR with a known pixel size: one rounded object with air all round it, 13 to 26 cm
  across (16.5 cm at least along its long axis), is a head; a volume must hold all of
  it: at least 12 cm in every direction, 13 cm in two, and under 26 cm in all.

Anything else gets no answer here: an unknown region is shown to the user and can be
corrected in the review; a wrong one is worse. scipy.ndimage does the image work.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

AIR_HU = -500  # below this: air (outside the body, in the lungs)
LUNG_HU = -300  # aerated lung, ground glass included (diseased lungs are not black)
LUNG_FRACTION = 0.10  # of the body's cross-section: chest slices 0.11-0.25, abdomen 0.01-0.09 in the real test set
BONE_HU = 300
MIN_BODY_MM = 200  # an abdomen is wider than this; a neck or a limb is not
LUNG_IN_FRONT = 0.33  # of the lung in front of the body's middle: chest slices 0.39-0.66, lung bases 0.24
CARDIAC_FOV_MM = (150, 260)  # a cardiac reconstruction's field of view (20-25 cm); an adult chest is wider
HEAD_MM = (130, 260)  # the extent of an adult head's outline, in mm
HEAD_LONG_MM = 165  # its long axis at least (a knee in profile: 158)
VERTEBRA_CM2 = (4, 30)  # a vertebra with its arch (and rib heads, joined); a contrast-filled heart is larger
VERTEBRA_P90_HU, VERTEBRA_SPREAD_HU = 400, 75  # cortex and marrow; contrast-filled blood is even (spread ~30)
CHEST_PROFILE = 0.3  # how much brighter the mediastinum is than the darker lung field (0-1 scale)


@dataclass
class Pixels:
    """What the region rules read: raw slices (HU for CT), their pixel size, a volume's extent."""

    slices: list[np.ndarray]
    spacing: float | None = None  # mm per pixel in-plane
    extent_mm: tuple[float, float, float] | None = None  # a volume's foreground extent (z, y, x)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PixelRegion:
    region: str
    coverage: float  # the fraction of the slices read that show it
    regions: tuple[str, ...]  # every region a slice showed, most slices first


def read_pixels(paths: list[Path], kind: str) -> Pixels | None:
    """The slices of one item (a 2D file, a volume, or a sorted DICOM series); None if unreadable."""
    try:
        if kind == "dicom_series":
            picks = sorted({paths[int(len(paths) * f)] for f in (0.25, 0.5, 0.75)}, key=paths.index)
            slices, spacing = [], None
            for path in picks:
                values, spacing = _dicom_values(path)
                slices.append(unpadded(values))
            return Pixels(slices, spacing)
        if kind == "volume":
            return _volume(paths[0])
        from PIL import Image

        from app.imaging import upright

        with Image.open(paths[0]) as image:
            return Pixels([unpadded(np.asarray(upright(image).convert("L"), dtype=np.float32))])
    except Exception:  # a file the scan read but pixels that do not decode: no answer from here
        return None


def unpadded(values: np.ndarray) -> np.ndarray:
    """The picture without the bars a converter or viewer put round it (letterbox, pillarbox):
    one value, darker than anything in the picture, filling the outside of its box. A picture
    whose own background has that value (an MR with its air set to 0, a CT's circle of -2000)
    is kept whole: its air is part of the anatomy's outline."""
    from scipy import ndimage as ndi

    low = values.min()
    pad = values == low
    if pad.mean() < 0.02:
        return values
    labels, count = ndi.label(~pad)
    if count == 0:
        return values
    sizes = ndi.sum(~pad, labels, range(1, count + 1))
    box = ndi.find_objects(labels)[int(np.argmax(sizes))]
    inner = values[box]
    if inner.min() <= low or inner.size > 0.98 * values.size:
        return values
    return inner


def _dicom_values(path: Path) -> tuple[np.ndarray, float | None]:
    from pydicom.pixels import apply_modality_lut

    from app.imaging import finite, is_palette, open_dicom, palette_rgb

    ds = open_dicom(path)
    pixels = ds.pixel_array
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if pixels.ndim == 4 or (pixels.ndim == 3 and samples == 1):
        pixels = pixels[len(pixels) // 2]  # multi-frame: the middle frame
    if is_palette(ds):
        pixels, samples = palette_rgb(pixels, ds), 3  # indices into a palette, not brightness
    if pixels.ndim == 3:
        pixels = pixels.mean(axis=-1)
    values = apply_modality_lut(pixels, ds).astype(np.float32) if samples == 1 else pixels.astype(np.float32)
    values = finite(values)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        values = values.max() - values
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    return values, (float(spacing[0]) if spacing else None)


def _volume(path: Path) -> Pixels:
    from app.imaging import finite, simpleitk

    sitk = simpleitk()
    image = sitk.ReadImage(str(path))
    if image.GetNumberOfComponentsPerPixel() > 1:
        image = sitk.VectorIndexSelectionCast(image, 0)
    if image.GetDimension() == 2:
        return Pixels([finite(sitk.GetArrayFromImage(image).astype(np.float32))], float(image.GetSpacing()[0]))
    if image.GetDimension() == 4:
        size = list(image.GetSize())
        image = sitk.Extract(image, [*size[:3], 0], [0, 0, 0, 0])
    image = sitk.DICOMOrient(image, "LPS")  # array axis 0 runs feet to head: axial slices
    volume = finite(sitk.GetArrayFromImage(image).astype(np.float32))  # NaN outside the anatomy: background
    spacing = image.GetSpacing()  # x, y, z
    slices = [volume[int(len(volume) * f)] for f in (0.25, 0.5, 0.75)]
    body = volume > _background_level(volume)
    extent = None
    if body.any():
        nonzero = [np.nonzero(body.any(axis=tuple(a for a in range(3) if a != axis)))[0] for axis in range(3)]
        sizes = [(n[-1] - n[0] + 1) for n in nonzero]
        extent = (sizes[0] * spacing[2], sizes[1] * spacing[1], sizes[2] * spacing[0])
    return Pixels(slices, float(spacing[0]), extent)


def _background_level(values: np.ndarray) -> float:
    """Between air and tissue in a picture without units: half Otsu's threshold of the 1-99.5% range."""
    from skimage.filters import threshold_otsu

    low, high = np.percentile(values, [1, 99.5])
    if high <= low:
        return float(high)
    sample = np.clip((values.ravel()[:: max(1, values.size // 200_000)] - low) / (high - low), 0, 1)
    return float(low + (high - low) * 0.5 * threshold_otsu(sample))


def _foreground(values: np.ndarray) -> np.ndarray:
    """What is not air, in a picture without units. Air is what the border mostly holds: the
    dark end of a magnitude image, but the middle grey of a signed (phase-sensitive inversion
    recovery) image, whose tissues lie both sides of it."""
    border = np.concatenate([values[0], values[-1], values[:, 0], values[:, -1]])
    air = float(np.median(border))
    low, high = np.percentile(values, [1, 99.5])
    if air - low <= 0.25 * (high - low):
        return values > _background_level(values)
    distance = np.abs(values - air)
    return distance > _background_level(distance)


def _body(mask: np.ndarray) -> np.ndarray | None:
    """The largest connected object, its holes filled (lungs, skull contents)."""
    from scipy import ndimage as ndi

    labels, count = ndi.label(mask)
    if count == 0:
        return None
    sizes = ndi.sum(mask, labels, range(1, count + 1))
    return ndi.binary_fill_holes(labels == (int(np.argmax(sizes)) + 1))


def _is_hu(values: np.ndarray) -> bool:
    """Hounsfield units: air near -1000 and bone or contrast well above water."""
    return float(values.min()) < -700 and float(values.max()) > 200


def ct_slice_region(values: np.ndarray, spacing: float | None) -> str | None:
    """brain, chest or abdomen for one CT slice in HU; None when it is not clear."""
    from scipy import ndimage as ndi

    body = _body(values > AIR_HU)
    if body is None or body.sum() < 0.02 * body.size:
        return None
    area = float(body.sum())
    bone = body & (values > BONE_HU)
    enclosed = ndi.binary_fill_holes(bone) & ~bone
    if enclosed.sum() > 0.4 * area:
        return "brain"  # a closed ring of bone around most of the cross-section: the skull
    if _edge(body) > 0.1:  # the field of view cuts the body: a heart- or spine-centred reconstruction
        if vertebra_centred(values, spacing):
            return "spine"
        return "cardiac" if heart_centred(values, spacing) else None
    lungs = body & (values < LUNG_HU)
    if lungs.sum() > LUNG_FRACTION * area:
        rows = np.nonzero(body.any(axis=1))[0]
        lung_rows = np.nonzero(lungs)[0]
        depth = (lung_rows.mean() - rows[0]) / (rows[-1] - rows[0] + 1)
        in_front = float(np.mean(lung_rows < (rows[0] + rows[-1]) / 2))
        if depth > 0.35 and in_front >= LUNG_IN_FRONT:
            # aerated lung, ill or not, behind the front third (not bowel gas) and reaching the
            # front half: at the liver dome the lung bases lie behind it, and the slice is abdomen
            return "chest"
    if spacing:
        columns = np.nonzero(body.any(axis=0))[0]
        if (columns[-1] - columns[0] + 1) * spacing >= MIN_BODY_MM:
            return "abdomen"
    return None


def heart_centred(values: np.ndarray, spacing: float | None) -> bool:
    """A reconstruction centred on the heart (cardiac CT): a field of view narrower than any
    adult chest but wider than a crop (15-26 cm), lung on both sides of the middle rows and
    soft tissue (the heart and great vessels) between them."""
    h, w = values.shape
    if not spacing or not CARDIAC_FOV_MM[0] <= w * spacing <= CARDIAC_FOV_MM[1]:
        return False  # a wider one shows the whole chest; a narrower one is a crop (a nodule's patch)
    if vertebra_centred(values, spacing):
        return False  # a thoracic spine reconstruction also has lung either side of its middle
    rows = values[int(h * 0.3) : int(h * 0.7)]
    sides = min((rows[:, : w // 3] < LUNG_HU).mean(), (rows[:, -(w // 3) :] < LUNG_HU).mean())
    middle = (rows[:, int(w * 0.4) : int(w * 0.6)] > -100).mean()
    return bool(sides >= 0.25 and middle >= 0.7)


def vertebra_centred(values: np.ndarray, spacing: float | None) -> bool:
    """A field of view up to 26 cm centred on a vertebra (a spine reconstruction): the largest
    bright object in the middle of the field (rows 25-65%, columns 30-70%; a heart-centred
    field has its vertebra at the bottom edge) is bone, with a cortex and marrow, of a
    vertebra's size (4-30 cm2, its arch and rib heads included)."""
    from scipy import ndimage as ndi

    h, w = values.shape
    if not spacing or w * spacing > CARDIAC_FOV_MM[1]:
        return False
    bright = ndi.binary_closing(values > 200, np.ones((3, 3)), iterations=max(1, round(2 / spacing)))
    labels, count = ndi.label(bright)
    if count == 0:
        return False
    centres = ndi.center_of_mass(bright, labels, range(1, count + 1))
    sizes = ndi.sum(bright, labels, range(1, count + 1))
    middle = [k for k, (y, x) in enumerate(centres) if 0.25 <= y / h <= 0.65 and 0.3 <= x / w <= 0.7]
    if not middle:
        return False
    k = max(middle, key=lambda i: sizes[i])
    inside = values[(labels == k + 1) & (values > 200)]
    area_cm2 = sizes[k] * spacing**2 / 100
    return bool(VERTEBRA_CM2[0] <= area_cm2 <= VERTEBRA_CM2[1] and np.percentile(inside, 90) >= VERTEBRA_P90_HU
                and inside.std() >= VERTEBRA_SPREAD_HU)


def _edge(body: np.ndarray) -> float:
    """How much of the image's border the body covers (0: air all round it)."""
    return float(np.concatenate([body[0], body[-1], body[:, 0], body[:, -1]]).mean())


def chest_film(values: np.ndarray) -> bool:
    """Two dark lung fields either side of a bright mediastinum: a frontal chest radiograph."""
    from scipy import ndimage as ndi

    low, high = np.percentile(values, [1, 99.5])
    if high <= low:
        return False
    scaled = np.clip((values - low) / (high - low), 0, 1)
    h, w = scaled.shape
    profile = ndi.uniform_filter1d(scaled[int(h * 0.3) : int(h * 0.65)].mean(axis=0), max(1, w // 20))

    def part(a: float, b: float) -> np.ndarray:
        return profile[int(w * a) : max(int(w * b), int(w * a) + 1)]

    middle = part(0.42, 0.58).max()
    left, right = part(0.12, 0.45).min(), part(0.55, 0.88).min()
    return bool(middle - max(left, right) > CHEST_PROFILE)


def mr_head(values: np.ndarray, spacing: float | None, extent: tuple[float, float, float] | None) -> bool:
    """One rounded object with air all round it, the size of a head (needs the pixel size)."""
    if not spacing:
        return False
    body = _body(_foreground(values))
    if body is None:
        return False
    if _edge(body) > (0.2 if extent else 0.05):
        return False  # cut by the field of view: a trunk or a limb, not a whole head
    rows, columns = np.nonzero(body.any(axis=1))[0], np.nonzero(body.any(axis=0))[0]
    fill = body.sum() / (np.pi / 4 * (rows[-1] - rows[0] + 1) * (columns[-1] - columns[0] + 1))
    if fill < 0.8:
        return False  # not an ellipse: two legs, two breasts, a hand
    low, high = HEAD_MM
    if extent:  # a volume: the whole head in it, not a slab (its middle slice may be near the top)
        small, middle, large = sorted(extent)
        return small >= 120 and middle >= low and large <= high
    height, width = (rows[-1] - rows[0] + 1) * spacing, (columns[-1] - columns[0] + 1) * spacing
    short, long = sorted((height, width))
    return low <= short and HEAD_LONG_MM <= long <= high and short / long > 0.65


def region_from_pixels(pixels: Pixels, modality: str, candidates: tuple[str, ...] = ()) -> PixelRegion | None:
    """The region the slices show, for a modality whose rule is above; None when unclear.

    ``candidates``: regions the descriptions name; a slice's answer outside them is not
    counted (a "chest and abdomen" study is one or the other, slice by slice)."""
    if modality == "CT":
        if not all(_is_hu(s) for s in pixels.slices):
            return None
        votes = [ct_slice_region(s, pixels.spacing) for s in pixels.slices]
    elif modality == "XR":
        votes = ["chest" if chest_film(s) else None for s in pixels.slices]
    elif modality in ("MR", "OT") and pixels.extent_mm:  # a volume: judged whole, on its middle slice
        middle = pixels.slices[len(pixels.slices) // 2]
        votes = ["brain" if mr_head(middle, pixels.spacing, pixels.extent_mm) else None]
    elif modality == "MR" or (modality == "OT" and pixels.spacing):  # the outline's shape and size only
        votes = ["brain" if mr_head(s, pixels.spacing, None) else None for s in pixels.slices]
    else:
        return None
    seen = Counter(v for v in votes if v and (not candidates or v in candidates))
    if not seen:
        return None
    region, count = seen.most_common(1)[0]
    if count * 2 <= len(votes):
        return None  # most slices said nothing clear
    return PixelRegion(region, count / len(votes), tuple(r for r, _ in seen.most_common()))


def looks_like_ct(pixels: Pixels) -> bool:
    """Values in Hounsfield units on every slice: air near -1000, soft tissue near 0 (a volume
    whose file says nothing of its modality: NIfTI CT is as common as NIfTI MR)."""
    for values in pixels.slices:
        if not _is_hu(values):
            return False
        air, tissue = np.mean(values < AIR_HU), np.mean((values > -100) & (values < 150))
        if air < 0.002 or tissue < 0.05:  # a crop inside the body holds little air, but some
            return False
    return bool(pixels.slices)
