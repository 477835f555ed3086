"""NIH ChestX-ray14: 112,120 frontal chest radiographs of 30,805 patients, 14 findings.

The image archives come from the NIH Clinical Center's public links (the ones its own
batch_download_zips.py uses); the label table and the official train_val / test lists
from a mirror or a local folder (the NIH Box folder serves them to browsers only).
Each archive is downloaded with resume and retries, checked against a SHA-256 when one
is published (a mirror's SHA256SUMS), unpacked safely, and deleted once unpacked; its
digest is kept in ``checksums.sha256`` and the index. A rerun skips finished archives.
The official lists become ``official_splits.csv`` (test as published; validation: a
seeded tenth of the train_val patients), which Organize follows.
"""

from __future__ import annotations

import csv
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.collectors import CollectResult, option, register_collector
from app.collectors.archives import safe_extract
from app.collectors.http import download, new_session
from core.errors import CollectError
from app.progress import Progress
from app.workspace import now_iso

FOLDER_PAGE = "https://nihcc.app.box.com/v/ChestXray-NIHCC"
BOX = "https://nihcc.box.com/shared/static/"
ARCHIVES = [f"images_{k:03d}.tar.gz" for k in range(1, 13)]
ARCHIVE_LINKS = dict(zip(ARCHIVES, [
    "vfk49d74nhbxq3nqjg0900w5nvkorp5c.gz", "i28rlmbvmfjbl8p2n3ril0pptcmcu9d1.gz", "f1t00wrtdk94satdfb9olcolqx20z2jp.gz",
    "0aowwzs5lhjrceb3qp67ahp0rd1l1etg.gz", "v5e3goj22zr6h8tzualxfsqlqaygfbsn.gz", "asi7ikud9jwnkrnkj99jnpfkjdes7l6l.gz",
    "jn1b4mw4n6lnh74ovmcjb8y48h8xj07n.gz", "tvpxmn7qyrgl0w8wfh9kqfjskv6nmm1j.gz", "upyy3ml7qdumlgk2rfcvlb9k6gvqq2pj.gz",
    "l6nilvfa9cg3s28tqv1qc1olm3gnz54p.gz", "hhq8fkdgvcari67vfhs7ppg2w6ni4jze.gz", "ioqwiy20ihqwyr8pf4c24eazhh281pbu.gz",
]))
LABELS = "Data_Entry_2017_v2020.csv"
LISTS = ("train_val_list.txt", "test_list.txt")
LICENCE = ("NIH Clinical Center: public, no restriction on use; acknowledge the NIH Clinical Center and cite "
           "Wang et al., ChestX-ray8, CVPR 2017")
VAL_FRACTION = 0.1


@dataclass(frozen=True)
class NihOptions:
    archives: int = option(12, help="how many of the 12 image archives (default all; each about 9,000 images, 3.5 GB)",
                           ask="How many of the 12 image archives (about 9,000 images, 3.5 GB each)?", ask_default=1,
                           high=12)
    metadata: str | None = option(None, metavar="FOLDER", kind="path",
                                  help="a folder holding Data_Entry_2017_v2020.csv, train_val_list.txt and "
                                       "test_list.txt (from the NIH Box folder)",
                                  ask="Folder with Data_Entry_2017_v2020.csv, train_val_list.txt, test_list.txt "
                                      "(from the NIH Box folder):")
    mirror: str | None = option(None, metavar="URL", help="a mirror serving the files by name (and SHA256SUMS)")
    name: str = option("nih-chestxray14", help="dataset name")
    keep_archives: bool = option(False, help="keep the .tar.gz files after unpacking")
    seed: int = option(0, help="seed of the validation split drawn from the official training list")

@register_collector("nih", "NIH ChestX-ray14 (chest X-rays, 14 findings; 42 GB)", options=NihOptions,
                    needs_network=True)
def collect_nih(
    workspace: Any,
    *,
    name: str = "nih-chestxray14",
    archives: int = 12,
    mirror: str | None = None,
    metadata: str | Path | None = None,
    keep_archives: bool = False,
    seed: int = 0,
    progress: Progress | None = None,
) -> CollectResult:
    """Download the label table, the official lists and the first ``archives`` image archives.

    Raises:
        CollectError: no network, a refused or damaged download, or the label files are
            neither at ``mirror`` nor in ``metadata``.
    """
    if not 1 <= archives <= len(ARCHIVES):
        raise CollectError(f"--archives takes 1 to {len(ARCHIVES)} (each holds about 9,000 images, 3.5 GB).")
    target = workspace.raw_target("nih", name)
    target.mkdir(parents=True, exist_ok=True)
    entry = workspace.load_index().get(name, {})
    done: dict[str, str] = dict(entry.get("archives_done", {}))
    workspace.record_dataset(name, source="nih", raw_path=workspace.relative(target), complete=False,
                             licence=LICENCE, started=entry.get("started", now_iso()), archives_done=done)
    session = new_session()
    base = mirror.rstrip("/") + "/" if mirror else None
    published = _published_digests(base, target, session) if base else {}
    _metadata_files(base, Path(metadata).expanduser() if metadata else None, target, session, published, progress)
    _official_splits(target, seed)
    for archive in ARCHIVES[:archives]:
        if archive in done and (target / "parts" / archive.split(".")[0]).is_dir():
            continue
        url = f"{base}{archive}" if base else BOX + ARCHIVE_LINKS[archive]
        got = download(url, target / "downloads" / archive, sha256=published.get(archive), session=session,
                       progress=progress, task=f"Downloading {archive}")
        safe_extract(got.path, target / "parts" / archive.split(".")[0], max_bytes=8 << 30, progress=progress)
        done[archive] = got.sha256
        if not keep_archives:
            got.path.unlink()
        _write_checksums(target, done)
        workspace.record_dataset(name, archives_done=done)  # survives an interruption of the next one
    if not keep_archives:
        shutil.rmtree(target / "downloads", ignore_errors=True)
    files = sum(1 for p in (target / "parts").rglob("*.png"))
    workspace.record_dataset(name, source="nih", raw_path=workspace.relative(target), files=files, complete=True,
                             licence=LICENCE, collected=now_iso(), archives_done=done,
                             note=f"{len(done)} of {len(ARCHIVES)} image archives")
    return CollectResult(name, target, files, f"({len(done)} of {len(ARCHIVES)} archives; official splits kept)")


def _published_digests(base: str, target: Path, session: Any) -> dict[str, str]:
    """The mirror's SHA256SUMS ("digest  name" lines), when it has one."""
    try:
        got = download(f"{base}SHA256SUMS", target / "SHA256SUMS", session=session, retries=2)
    except CollectError as err:
        if "404" in str(err):
            return {}
        raise
    digests = {}
    for line in got.path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            digests[parts[1].lstrip("*")] = parts[0].lower()
    return digests


def _metadata_files(base: str | None, folder: Path | None, target: Path, session: Any,
                    published: dict[str, str], progress: Progress | None) -> None:
    for file in (LABELS, *LISTS):
        destination = target / file
        if folder is not None:
            source = folder / file
            if not source.is_file():
                raise CollectError(f"{file} is not in {folder}. Download it from {FOLDER_PAGE} (free, in a browser).")
            shutil.copy2(source, destination)
        elif base is not None:
            download(f"{base}{file}", destination, sha256=published.get(file), session=session, progress=progress)
        elif not destination.is_file():
            raise CollectError(
                f"The NIH folder serves {LABELS}, {LISTS[0]} and {LISTS[1]} to browsers only: download them from "
                f"{FOLDER_PAGE} into a folder and run again with --metadata FOLDER (or use --mirror URL)."
            )
    with open(target / LABELS, newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle), [])
    if not {"Image Index", "Finding Labels", "Patient ID"} <= set(header):
        raise CollectError(f"{LABELS} is not the NIH label table (its columns: {', '.join(header[:5]) or 'none'}). "
                           f"Download it again from {FOLDER_PAGE}.")


def _official_splits(target: Path, seed: int) -> None:
    """official_splits.csv: the published test list; validation: a seeded tenth of the
    train_val patients (by patient, so no one is in two splits)."""
    patients = {}
    with open(target / LABELS, newline="", encoding="utf-8-sig") as handle:
        for row in csv.DictReader(handle):
            patients[row["Image Index"].strip()] = row["Patient ID"].strip()
    train_val = [n.strip() for n in (target / LISTS[0]).read_text().split() if n.strip()]
    test = [n.strip() for n in (target / LISTS[1]).read_text().split() if n.strip()]
    people = sorted({patients.get(n, n) for n in train_val})
    random.Random(seed).shuffle(people)
    val_people = set(people[: max(1, round(VAL_FRACTION * len(people)))])
    tmp = target / ".official_splits.csv.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Image Index", "split"])
        for image in train_val:
            writer.writerow([image, "val" if patients.get(image, image) in val_people else "train"])
        for image in test:
            writer.writerow([image, "test"])
    tmp.replace(target / "official_splits.csv")


def _write_checksums(target: Path, done: dict[str, str]) -> None:
    lines = "".join(f"{digest}  {archive}\n" for archive, digest in sorted(done.items()))
    (target / "checksums.sha256").write_text(lines, encoding="utf-8")
