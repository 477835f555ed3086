#!/usr/bin/env bash
# Services the tests start on loopback: Orthanc with its DICOMweb plugin (Debian packages),
# for the DICOMweb collector's tests. Installed once; the tests skip with a reason without it.
set -euo pipefail
if [ -x /usr/sbin/Orthanc ] && [ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]; then
    exit 0
fi
bash "$(dirname "${BASH_SOURCE[0]}")/apt_install.sh" "the DICOMweb tests" orthanc orthanc-dicomweb
