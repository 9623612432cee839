#!/usr/bin/env bash
# Run HERE (a machine with PyPI), once, before bench/gpu.sh goes to a GPU machine that cannot reach PyPI:
# downloads into .whl/ the wheels that ganforge's trainer needs and the GPU machine's image lacks (its
# python3 3.12 has torch, numpy, safetensors, PIL, scikit-learn, but not pydantic or SQLAlchemy), for
# CPython 3.12 on x86-64 Linux, at the versions this checkout's .venv runs. .whl/ is git-ignored locally
# (.git/info/exclude); carry it: run(command="bash bench/gpu.sh", carry=[".whl"]).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
PY=${PYTHON:-.venv/bin/python}
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
mkdir -p .whl
for name in pydantic pydantic_core annotated-types typing-inspection pydantic-settings python-dotenv SQLAlchemy; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$name==$(version "$name")"
done
ls -la .whl
