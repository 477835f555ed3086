#!/usr/bin/env bash
# Services the tests start on loopback: Orthanc with its DICOMweb plugin (Debian packages),
# for the DICOMweb collector's tests. Installed once; the tests skip with a reason without it.
set -euo pipefail
if [ -x /usr/sbin/Orthanc ] && [ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "Note: no apt-get here; install Orthanc and its DICOMweb plugin to run the DICOMweb tests." >&2
    exit 0
fi
as_root=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then as_root="sudo"; else
        echo "Note: not root; install orthanc and orthanc-dicomweb (apt) to run the DICOMweb tests." >&2
        exit 0
    fi
fi
echo "Installing Orthanc and its DICOMweb plugin for the tests (Debian packages)..."
export DEBIAN_FRONTEND=noninteractive
$as_root apt-get install -y -q orthanc orthanc-dicomweb >/dev/null 2>&1 || {
    $as_root apt-get update -q >/dev/null 2>&1 && $as_root apt-get install -y -q orthanc orthanc-dicomweb >/dev/null
}
