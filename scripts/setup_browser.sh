#!/usr/bin/env bash
# The browser the dashboard's end-to-end tests drive (tests/e2e/test_dashboard.py): Debian's
# chromium and chromedriver, through Selenium. Installed once; without them the test skips
# with the reason. No browser is downloaded at run time.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    exit 0
fi
bash "$(dirname "${BASH_SOURCE[0]}")/apt_install.sh" "the dashboard's browser tests" chromium chromium-driver
