"""A real Orthanc server (Debian packages orthanc, orthanc-dicomweb) on loopback, for tests."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

ORTHANC = Path("/usr/sbin/Orthanc")
PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    def __init__(self, folder: Path) -> None:
        if not (ORTHANC.exists() and PLUGIN.exists()):
            pytest.skip("Orthanc with its DICOMweb plugin is not installed (scripts/setup_test_services.sh does it)")
        self.folder, self.port = folder, _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "Name": "medanomaly-test", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
            "HttpPort": self.port, "DicomServerEnabled": False, "DicomPort": _free_port(),
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "HttpBindAddress": "127.0.0.1",
            "Plugins": [str(PLUGIN)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        (folder / "orthanc.json").write_text(json.dumps(config))
        self.log = open(folder / "orthanc.log", "w")
        self.process = subprocess.Popen([str(ORTHANC), str(folder / "orthanc.json")], stdout=self.log,
                                        stderr=subprocess.STDOUT)
        import requests

        for _ in range(100):
            try:
                if requests.get(f"{self.url}/system", timeout=1).ok:
                    return
            except requests.ConnectionError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not start: {(folder / 'orthanc.log').read_text()[-2000:]}")

    def upload(self, files: list[Path]) -> None:
        import requests

        for path in files:
            requests.post(f"{self.url}/instances", data=path.read_bytes(), timeout=30).raise_for_status()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()
        shutil.rmtree(self.folder / "db", ignore_errors=True)
