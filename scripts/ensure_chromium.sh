#!/usr/bin/env bash
# Makes sure Debian's headless-capable Chromium is installed for the browser test
# (tests/test_service.py drives it through Playwright; no browser is downloaded
# from Playwright's CDN). As root (or with passwordless sudo) it installs the
# `chromium` package; otherwise it stops with the one line a user needs to run.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
echo "ensure_chromium: installing Debian's chromium for the browser test" >&2
if [ "$(id -u)" = "0" ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  echo "The browser test needs Chromium: run 'sudo apt-get install -y chromium'." >&2
  exit 1
fi
# Install from the lists already on the machine; refresh them only if that fails.
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null 2>&1 || {
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
}
command -v chromium >/dev/null 2>&1
