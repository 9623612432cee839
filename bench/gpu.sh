#!/usr/bin/env bash
# The GPU benchmark, prepared for a GPU machine with no network (the `run` device tool): trainer steps/s
# against a bare PyTorch loop of the same nets (MLP, DCGAN 64 px, ResNet 32 px; fp32 and bf16) and the
# fraction of the GPU's peak FLOP/s reached (bench/gpu_bench.py says how each figure is made).
#
#   bash bench/gpu_wheels.sh                      # here, once: the wheels the GPU machine lacks, into .whl/
#   run(command="bash bench/gpu.sh", carry=[".whl"], timeout_s=420)
#
# Uses the machine's own python3 and its torch (no virtual environment is built: nothing can be fetched
# there); ganforge's other needs (pydantic, SQLAlchemy, ...) come from .whl/ into /tmp/site. Under 5 min:
# ~30 s of set-up, then 8 rows of ~25 s each. Output is also written to $OUT/gpu.log when $OUT is set.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import pydantic, pydantic_settings, sqlalchemy" 2>/dev/null; then
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "pydantic/SQLAlchemy missing and no .whl/: run bench/gpu_wheels.sh where PyPI is reachable, carry .whl" >&2
    exit 2
  fi
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 2
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
export GANFORGE_DATA_DIR=${TMPDIR:-/tmp}/ganforge-gpu-bench
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>/dev/null || true
log=${OUT:+$OUT/gpu.log}
timeout 270 "$PY" bench/gpu_bench.py "$@" 2>&1 | tee ${log:-/dev/null}
