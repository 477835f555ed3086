#!/usr/bin/env bash
# Install Debian packages a test needs, once: apt_install.sh "WHAT THEY ARE FOR" PACKAGE...
# Without apt-get, or not root and no password-less sudo, it says what to install and exits 0
# (the tests that need them skip with the reason). Used by setup_test_services.sh and setup_browser.sh.
set -euo pipefail
what="$1"
shift
if ! command -v apt-get >/dev/null; then
    echo "Note: no apt-get here; install $* to run $what." >&2
    exit 0
fi
as_root=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then as_root="sudo"; else
        echo "Note: not root; install $* (apt) to run $what." >&2
        exit 0
    fi
fi
echo "Installing $* for $what (Debian packages)..."
export DEBIAN_FRONTEND=noninteractive
$as_root apt-get install -y -q "$@" >/dev/null 2>&1 || {
    $as_root apt-get update -q >/dev/null 2>&1 && $as_root apt-get install -y -q "$@" >/dev/null
}
