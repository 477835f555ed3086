"""The DICOMweb collector against a real Orthanc on loopback, loaded with DICOM from ../shared/data."""

import pydicom
import pytest

from app.collectors import collect
from core.errors import CollectError
from app.organize.organizer import organize
from tests.conftest import shared, workspace_files_without_raw
from tests.fakes.orthanc import Orthanc


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    series = sorted(shared("dicom/mr_brain_t1w_series").glob("*.dcm"))[:12]
    server = Orthanc(tmp_path_factory.mktemp("orthanc"))
    try:
        server.upload(series)
        yield server, series
    finally:
        server.stop()


def test_studies_are_found_retrieved_resumed_and_organized(ws, orthanc) -> None:
    server, series = orthanc
    result = collect("dicomweb", ws, url=f"{server.url}/dicom-web", name="pacs", modality="MR")
    assert result.files == len(series)
    sent = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in series}
    got = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in result.path.rglob("*.dcm")}
    assert got == sent
    assert not any(uid in str(p) for p in result.path.rglob("*") for uid in sent), "no UID in file names"
    entry = ws.load_index()["pacs"]
    assert entry["complete"] and entry["source"] == "dicomweb"

    # Resume: a lost instance is fetched again, the others are not.
    lost = next(result.path.rglob("*.dcm"))
    lost.unlink()
    again = collect("dicomweb", ws, url=f"{server.url}/dicom-web", name="pacs")
    assert again.files == len(series) and "1 retrieved now" in again.note

    organized = organize(ws, "pacs", "pacs")
    assert organized.items == 1  # one series
    secret_names = {str(pydicom.dcmread(series[0], stop_before_pixels=True).PatientName)} - {""}
    for path in workspace_files_without_raw(ws):
        text = path.read_text(errors="ignore") if path.suffix in (".csv", ".json", ".md", ".txt") else ""
        assert not any(name in text for name in secret_names if len(name) > 3)


def test_one_study_by_uid_and_clear_errors(ws, orthanc) -> None:
    server, series = orthanc
    study = str(pydicom.dcmread(series[0], stop_before_pixels=True).StudyInstanceUID)
    assert collect("dicomweb", ws, url=f"{server.url}/dicom-web", study=study, name="one").files == len(series)
    with pytest.raises(CollectError, match="No study of modality CT"):
        collect("dicomweb", ws, url=f"{server.url}/dicom-web", modality="CT", name="none")
    with pytest.raises(CollectError, match="Cannot reach the DICOMweb service"):
        collect("dicomweb", ws, url="http://127.0.0.1:9/dicom-web", name="down")


def test_busy_answers_are_retried(ws) -> None:
    from tests.fakes.http_server import FakeServer, Route

    with FakeServer() as server:
        server.routes["/dicom-web/studies"] = Route([], content_type="application/dicom+json", statuses=[503, 429])
        with pytest.raises(CollectError, match="No study"):
            collect("dicomweb", ws, url=f"{server.url}/dicom-web", name="busy")
        assert [r.status for r in server.requests_to("/dicom-web/studies")] == [503, 429, 200]
