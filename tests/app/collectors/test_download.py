"""The download engine and safe unpacking, against a local server with faults."""

import hashlib
import io
import tarfile
import zipfile

import pytest

from app.collectors.archives import safe_extract
from app.collectors.http import download
from core.errors import CollectError
from tests.fakes.http_server import FakeServer, Route

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


def no_wait(_: float) -> None:
    pass


def test_a_dropped_transfer_resumes_with_a_range_request(tmp_path) -> None:
    with FakeServer() as server:
        server.routes["/big.bin"] = Route(PAYLOAD, cut_after=[300_000, 200_000])
        seen = []
        got = download(f"{server.url}/big.bin", tmp_path / "big.bin", sha256=DIGEST, sleep=no_wait,
                       progress=lambda task, done, total, **info: seen.append((done, total, info.get("unit"))))
        requests = server.requests_to("/big.bin")
    assert got.path.read_bytes() == PAYLOAD and got.sha256 == DIGEST and got.attempts == 3
    ranges = [r.headers.get("Range") for r in requests]
    starts = [int(r[6:-1]) for r in ranges[1:]]
    assert ranges[0] is None and 0 < starts[0] <= 300_000 < starts[1] <= 500_000
    assert [r.status for r in requests] == [200, 206, 206]
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD), "bytes")
    assert not (tmp_path / "big.bin.part").exists()


def test_a_partial_file_from_an_earlier_run_is_resumed(tmp_path) -> None:
    (tmp_path / "big.bin.part").write_bytes(PAYLOAD[:123_456])
    with FakeServer() as server:
        server.routes["/big.bin"] = Route(PAYLOAD)
        got = download(f"{server.url}/big.bin", tmp_path / "big.bin", sha256=DIGEST)
        assert server.requests_to("/big.bin")[0].headers["Range"] == "bytes=123456-"
    assert got.resumed_from == 123_456 and got.path.read_bytes() == PAYLOAD


def test_429_and_5xx_are_retried_with_backoff(tmp_path) -> None:
    waits = []
    with FakeServer() as server:
        server.routes["/f"] = Route(PAYLOAD, statuses=[429, 503, 500])
        got = download(f"{server.url}/f", tmp_path / "f", sleep=waits.append, backoff=0.5)
    assert got.path.read_bytes() == PAYLOAD and got.attempts == 4
    assert waits == [0.0, 0.0, 0.0]  # the server's Retry-After: 0 wins over the backoff


def test_retries_run_out_only_when_nothing_moves_and_the_partial_file_is_kept(tmp_path) -> None:
    with FakeServer() as server:
        server.routes["/f"] = Route(PAYLOAD, cut_after=[200_000, 1000, 1000, 1000])
        with pytest.raises(CollectError, match="run the same command again to resume"):
            download(f"{server.url}/f", tmp_path / "f", retries=2, sleep=no_wait)
        kept = (tmp_path / "f.part").stat().st_size
        assert 0 < kept <= 200_000 and not (tmp_path / "f").exists()
        server.routes["/f"] = Route(PAYLOAD, cut_after=[150_000] * 12)  # cut often, but always moving
        assert download(f"{server.url}/f", tmp_path / "f", retries=2, sleep=no_wait).path.read_bytes() == PAYLOAD


def test_a_wrong_checksum_is_rejected_and_nothing_kept(tmp_path) -> None:
    with FakeServer() as server:
        server.routes["/f"] = Route(PAYLOAD[:-1] + b"x")
        with pytest.raises(CollectError, match="does not match its published SHA-256"):
            download(f"{server.url}/f", tmp_path / "f", sha256=DIGEST)
    assert not list(tmp_path.iterdir())


def test_refusals_and_missing_files_are_clear(tmp_path) -> None:
    with FakeServer() as server:
        server.routes["/secret"] = Route(PAYLOAD, need_header=("Authorization", "Bearer ok"))
        with pytest.raises(CollectError, match="check your credentials"):
            download(f"{server.url}/secret", tmp_path / "s")
        with pytest.raises(CollectError, match="404"):
            download(f"{server.url}/gone", tmp_path / "g")


def test_no_network_is_a_clear_message(tmp_path) -> None:
    with pytest.raises(CollectError, match="Cannot reach"):
        download("http://no-such-host.invalid/f", tmp_path / "f", sleep=no_wait)


def test_a_download_larger_than_the_free_disk_is_refused(tmp_path, monkeypatch) -> None:
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10**9, 10**9 - 1000, 1000))
    with FakeServer() as server:
        server.routes["/f"] = Route(PAYLOAD)
        with pytest.raises(CollectError, match="Not enough free disk"):
            download(f"{server.url}/f", tmp_path / "f")
    assert not (tmp_path / "f").exists()


# -- archives ---------------------------------------------------------------------------------
def _zip(path, members: dict[str, bytes], links: dict[str, str] | None = None) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, target)


def _tar(path, members: dict[str, bytes], links: dict[str, str] | None = None) -> None:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tf.addfile(info)


def test_good_archives_unpack_whole(tmp_path) -> None:
    for maker, name in ((_zip, "a.zip"), (_tar, "a.tar.gz")):
        _ = maker(tmp_path / name, {"images/x.png": b"png", "labels.csv": b"a,b\n"})
        target = tmp_path / f"out-{name}"
        assert safe_extract(tmp_path / name, target) == 2
        assert (target / "images" / "x.png").read_bytes() == b"png"
        assert not target.with_name(target.name + ".partial").exists()


@pytest.mark.parametrize("maker", [_zip, _tar])
@pytest.mark.parametrize("members, links, reason", [
    ({"../evil.txt": b"x"}, None, "outside the target|outside|path"),
    ({"/tmp/evil-abs.txt": b"x"}, None, "outside the target|absolute|outside"),
    ({"ok.txt": b"x"}, {"link": "/etc/passwd"}, "link"),
])
def test_malicious_archives_are_refused_and_nothing_is_written(tmp_path, maker, members, links, reason) -> None:
    archive = tmp_path / "bad.archive"
    maker(archive, members, links)
    target = tmp_path / "deep" / "target"
    target.parent.mkdir()
    before = set(tmp_path.rglob("*"))
    with pytest.raises(CollectError, match=reason):
        safe_extract(archive, target)
    assert set(tmp_path.rglob("*")) == before, "nothing written, inside or outside the target"


@pytest.mark.parametrize("maker", [_zip, _tar])
def test_an_archive_bomb_is_refused(tmp_path, maker) -> None:
    archive = tmp_path / "bomb"
    maker(archive, {"zeros.bin": bytes(50_000_000)})  # compresses about 1000:1
    with pytest.raises(CollectError, match="over the limit"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
