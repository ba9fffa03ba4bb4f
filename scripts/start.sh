#!/usr/bin/env bash
# Quick start: set up the environment, then start the server with the editor on http://127.0.0.1:8188
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python main.py serve "$@"
