#!/usr/bin/env bash
# The browser the dashboard's end-to-end tests drive (tests/e2e/test_dashboard.py): Debian's
# chromium and chromedriver, through Selenium. Installed once; without them the test skips
# with the reason. No browser is downloaded at run time.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "Note: no apt-get here; install chromium and chromedriver to run the dashboard's browser tests." >&2
    exit 0
fi
as_root=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then as_root="sudo"; else
        echo "Note: not root; install chromium and chromium-driver (apt) to run the dashboard's browser tests." >&2
        exit 0
    fi
fi
echo "Installing chromium and chromedriver for the dashboard's browser tests (Debian packages)..."
export DEBIAN_FRONTEND=noninteractive
$as_root apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || {
    $as_root apt-get update -q >/dev/null 2>&1 && $as_root apt-get install -y -q chromium chromium-driver >/dev/null
}
