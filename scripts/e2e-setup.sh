#!/usr/bin/env bash
# Install what the end-to-end tests (tests/e2e) need: Debian's Chromium and Playwright's Python driver.
# Playwright never downloads a browser here: the tests launch /usr/bin/chromium.
# Run as root (or with sudo) on Debian/Ubuntu; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
if [ ! -x /usr/bin/chromium ]; then
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends chromium
fi
if [ ! -x .venv/bin/python ]; then bash scripts/setup.sh; fi
.venv/bin/python -m pip install -q "playwright==1.65.2"
/usr/bin/chromium --version
