"""NIH ChestX-ray14 from a local mirror: resume, retries, checksums, official splits, Organize."""

import hashlib
import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from app.collectors import collect
from app.data import split_rows
from core.errors import CollectError
from app.organize.organizer import organize
from tests.fakes.http_server import FakeServer, Route


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = np.zeros((192, 192), np.uint8)  # noisy enough that an archive outgrows one read chunk
    image[16:176, 16:176] = rng.integers(60, 200, (160, 160))
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _archive(names: list[str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for k, name in enumerate(names):
            data = _png(k + 7 * len(name))
            info = tarfile.TarInfo(f"images/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def mirror():
    """Two archives of 12 images each (patients 1-12, two images each); 10-12 in the test list."""
    names = [f"{p:08d}_{i:03d}.png" for p in range(1, 13) for i in range(2)]
    findings = ["No Finding", "Effusion", "Cardiomegaly|Effusion", "No Finding"]
    table = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age\n" + "".join(
        f"{n},{findings[k % 4]},{k % 2},{int(n[:8])},50\n" for k, n in enumerate(names))
    files = {
        "Data_Entry_2017_v2020.csv": table.encode(),
        "train_val_list.txt": "\n".join(n for n in names if int(n[:8]) <= 9).encode(),
        "test_list.txt": "\n".join(n for n in names if int(n[:8]) > 9).encode(),
        "images_001.tar.gz": _archive(names[:12]),
        "images_002.tar.gz": _archive(names[12:]),
    }
    sums = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in files.items())
    with FakeServer() as server:
        for name, data in files.items():
            server.routes[f"/nih/{name}"] = Route(data)
        server.routes["/nih/SHA256SUMS"] = Route(sums.encode())
        yield server, files


def test_nih_from_a_mirror_survives_faults_and_keeps_the_official_splits(ws, mirror, monkeypatch) -> None:
    import time

    monkeypatch.setattr(time, "sleep", lambda _: None)
    server, files = mirror
    server.routes["/nih/images_001.tar.gz"].statuses = [503, 429]
    server.routes["/nih/images_002.tar.gz"].cut_after = [len(files["images_002.tar.gz"]) // 2]
    result = collect("nih", ws, mirror=f"{server.url}/nih", archives=2)
    assert result.files == 24
    statuses = [r.status for r in server.requests_to("/nih/images_001.tar.gz")]
    assert statuses == [503, 429, 200]
    ranges = [r.headers.get("Range") for r in server.requests_to("/nih/images_002.tar.gz")]
    assert ranges[0] is None and ranges[1] and ranges[1].startswith("bytes="), "the cut transfer resumed"
    entry = ws.load_index()["nih-chestxray14"]
    assert entry["complete"] and entry["source"] == "nih" and "NIH Clinical Center" in entry["licence"]
    assert entry["archives_done"]["images_002.tar.gz"] == hashlib.sha256(files["images_002.tar.gz"]).hexdigest()
    assert not (result.path / "downloads").exists(), "archives are deleted once unpacked"

    organized = organize(ws, "nih-chestxray14", "nih")
    assert organized.items == 24
    test = split_rows(ws, "nih", "test")
    assert len(test) == 6, "the published test list (patients 10-12)"
    val = split_rows(ws, "nih", "val")
    assert val and not {r["patient_id"] for r in val} & {r["patient_id"] for r in split_rows(ws, "nih", "train")}
    labels = {r["label"] for r in test} | {r["label"] for r in split_rows(ws, "nih", "train")}
    assert {r["modality"] for r in test} == {"XR"} and "normal" in labels and len(labels) > 1

    # A rerun skips what is done.
    before = len(server.log)
    collect("nih", ws, mirror=f"{server.url}/nih", archives=2)
    assert not [r for r in server.log[before:] if r.path.endswith(".tar.gz")]


def test_a_wrong_checksum_is_rejected_and_the_dataset_stays_incomplete(ws, mirror) -> None:
    server, files = mirror
    server.routes["/nih/images_001.tar.gz"].body = files["images_001.tar.gz"][:-10] + b"0123456789"
    with pytest.raises(CollectError, match="does not match its published SHA-256"):
        collect("nih", ws, mirror=f"{server.url}/nih", archives=1)
    assert not ws.load_index()["nih-chestxray14"]["complete"]
    assert "nih-chestxray14" not in ws.raw_datasets()


def test_without_the_label_files_the_message_says_where_to_get_them(ws) -> None:
    with pytest.raises(CollectError, match="--metadata FOLDER"):
        collect("nih", ws, archives=1)
