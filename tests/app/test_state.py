import json
from pathlib import Path

import pytest

from core.errors import StateError
from app.state import Kind, read_state, write_state


def test_write_then_read_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "index.json"
    write_state(path, Kind.DATASET_INDEX, {"datasets": {"demo": {"files": 3}}})
    loaded = read_state(path, Kind.DATASET_INDEX)
    assert loaded["datasets"] == {"demo": {"files": 3}}
    assert loaded["schema_version"] == 1 and loaded["kind"] == "dataset_index"
    assert not list(tmp_path.glob(".*tmp")), "no temporary file left behind"


@pytest.mark.parametrize(
    "content, expected",
    [
        ("{not json", "corrupt"),
        ("[]", "expected a JSON object"),
        (json.dumps({"kind": "dataset_index", "schema_version": 99, "datasets": {}}), "schema version 99"),
        (json.dumps({"kind": "workflow", "schema_version": 1, "dataset": "x", "steps": {}}), "expected a dataset_index"),
        (json.dumps({"kind": "dataset_index", "schema_version": 1}), "lacks the key 'datasets'"),
        (json.dumps({"kind": "dataset_index", "schema_version": 1, "datasets": []}), "wrong type"),
    ],
)
def test_bad_files_raise_a_clear_error_naming_the_file(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "datasets.json"
    path.write_text(content)
    with pytest.raises(StateError) as err:
        read_state(path, Kind.DATASET_INDEX)
    assert expected in str(err.value)
    assert str(path) in str(err.value)


def test_a_corrupt_index_is_never_overwritten(ws) -> None:
    ws.index_path.write_text("{truncated")
    with pytest.raises(StateError):
        ws.record_dataset("demo", files=1)
    assert ws.index_path.read_text() == "{truncated"


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    write_state(path, Kind.SETTINGS, {"seed": 1})
    with pytest.raises(TypeError):
        write_state(path, Kind.SETTINGS, {"seed": object.__new__(type("Unserializable", (), {"__str__": None}))})
    assert read_state(path, Kind.SETTINGS)["seed"] == 1
    assert not list(tmp_path.glob(".*tmp"))
