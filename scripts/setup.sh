#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv. Idempotent and quiet when up to date.
# torch is pinned to the local CPU wheel first, so the rest of the install never pulls CUDA packages;
# on a GPU machine set SUMIE_TORCH="torch==<version>+cu124" (or install torch yourself first).
# SUMIE_EXTRAS="comfyui-frontend ray" also installs those optional extras of pyproject.toml (space-separated).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.sumie-installed
want=$( (cat pyproject.toml scripts/setup.sh; echo "${SUMIE_EXTRAS:-}") | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q "${SUMIE_TORCH:-torch==2.13.0}"
  # The dependencies of pyproject.toml, the test tools and the extras named in SUMIE_EXTRAS; then the
  # packages whose declared dependencies must not be installed ([tool.sumie] no-deps: they would pull
  # in torchvision).
  SUMIE_EXTRAS="${SUMIE_EXTRAS:-}" .venv/bin/python - <<'PYEOF'
import os
import tomllib
doc = tomllib.load(open("pyproject.toml", "rb"))
p = doc["project"]
extras = ["test", *os.environ["SUMIE_EXTRAS"].split()]
reqs = p["dependencies"] + [r for e in extras for r in p["optional-dependencies"][e]]
open(".venv/requirements.txt", "w").write("\n".join(reqs) + "\n")
open(".venv/requirements-nodeps.txt", "w").write("\n".join(doc["tool"]["sumie"]["no-deps"]) + "\n")
PYEOF
  .venv/bin/python -m pip install -q -r .venv/requirements.txt
  .venv/bin/python -m pip install -q --no-deps -r .venv/requirements-nodeps.txt
  echo "$want" > "$stamp"
fi
