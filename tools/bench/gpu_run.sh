#!/usr/bin/env bash
# One GPU check on a bare GPU node, from the repository root, in about 5 minutes:
#
#     bash tools/bench/gpu_run.sh [gpu_check.py options...]
#
# Installs the wheels carried in .whl/ (fla, DeepSpeed, submitit, pydantic, ...; see docs/GPU.md
# for how to fill it) into /tmp/site without touching the node's own packages, runs the project
# from this checkout (not installed), points EVOLVE_DATA at the corpus prepared in .gpudata/,
# prints nvidia-smi and the versions, then runs tools/bench/gpu_check.py. Its JSON goes to
# $OUT/gpu_check.json and everything printed is also kept in $OUT/gpu_check.log ($OUT defaults
# to ./bench-out). Safe under `timeout`: gpu_check.py stops starting parts after
# GPU_CHECK_BUDGET_S seconds (default 300) and each part is capped; the exit status is
# gpu_check.py's (0 ok, 1 a kernel disagrees, 2 no CUDA, 3 a part failed), or 4 when the
# wheels do not install.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 4
ROOT=$PWD
OUT=${OUT:-$ROOT/bench-out}
mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
: > "$LOG"
log() { echo "$@" | tee -a "$LOG"; }
PY=${PYTHON:-python3}
T0=$(date +%s)

log "== gpu_run.sh $(date -u +%FT%TZ) in $ROOT"
if compgen -G ".whl/*.whl" > /dev/null; then
    SITE=${GPU_CHECK_SITE:-/tmp/site}
    if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" .whl/*.whl 2>&1 | tee -a "$LOG"; then
        log "gpu_run.sh: installing .whl/*.whl into $SITE failed"
        exit 4
    fi
    export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
    log "installed $(ls .whl/*.whl | wc -l) wheels into $SITE in $(( $(date +%s) - T0 )) s"
else
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
    log "no .whl/ folder: using the node's own packages"
fi

# Data: the corpus prepared where pip works (tools/prepare_data.py --data-dir .gpudata), copied
# to /tmp so the token shard built from it stays out of the checkout. The node has no network:
# nothing is downloaded (gpu_check.py falls back to synthetic bytes without a corpus).
if [ -z "${EVOLVE_DATA:-}" ] && [ -d .gpudata/corpora ]; then
    export EVOLVE_DATA=/tmp/evolve_data
    mkdir -p "$EVOLVE_DATA/corpora" && cp -p .gpudata/corpora/* "$EVOLVE_DATA/corpora/"
fi
# DeepSpeed: no prebuilt ops, nothing compiled at import; CUDA accelerator; caches under /tmp.
export DS_BUILD_OPS=0 DS_ACCELERATOR=${DS_ACCELERATOR:-cuda}
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-/tmp/torch_extensions}
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/triton_cache}
# No hub access from transformers / datasets on an offline node.
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# One process, one GPU: torch.distributed's variables, so DeepSpeed never looks for MPI.
# MASTER_PORT is left to evolve.train.engines.ensure_distributed_env (a port per process id), so the
# trainings, one process each, never meet a port the previous one left in TIME_WAIT.
export RANK=${RANK:-0} LOCAL_RANK=${LOCAL_RANK:-0} WORLD_SIZE=${WORLD_SIZE:-1}
export MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
mkdir -p "$TORCH_EXTENSIONS_DIR" "$TRITON_CACHE_DIR"

{
    echo "== nvidia-smi"
    nvidia-smi 2>&1 || echo "(nvidia-smi failed)"
    nvidia-smi --query-gpu=name,memory.total,power.limit,clocks.max.sm,clocks.max.mem \
        --format=csv 2>&1 || true
    echo "== versions"
    # From /tmp: the checkout comes from PYTHONPATH alone, as in gpu_check.py's processes.
    (cd /tmp && "$PY" - <<'EOF') 2>&1
import importlib, sys
print("python", sys.version.split()[0], sys.executable)
for name in ("torch", "triton", "fla", "deepspeed", "transformers", "submitit", "pydantic",
             "einops", "numpy"):
    try:
        m = importlib.import_module(name)
        print(f"{name:<13}{getattr(m, '__version__', '?'):<22}{m.__file__}")
    except Exception as exc:
        print(f"{name:<13}NOT IMPORTABLE: {type(exc).__name__}: {exc}")
import torch
print("cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
import evolve.kernels, evolve.kernels.dispatch
print("evolve.kernels ops from", evolve.kernels.__path__, "available backends",
      evolve.kernels.available_backends())
EOF
    echo "== env: EVOLVE_DATA=${EVOLVE_DATA:-} PYTHONPATH=$PYTHONPATH"
} 2>&1 | tee -a "$LOG"

BUDGET=${GPU_CHECK_BUDGET_S:-300}
log "== gpu_check.py --budget-s $BUDGET $*  ($(( $(date +%s) - T0 )) s so far)"
"$PY" -u tools/bench/gpu_check.py --budget-s "$BUDGET" --json "$OUT/gpu_check.json" "$@" 2>&1 \
    | tee -a "$LOG"
rc=${PIPESTATUS[0]}
log "== gpu_run.sh: gpu_check.py exit $rc after $(( $(date +%s) - T0 )) s; files in $OUT:"
ls -la "$OUT" 2>&1 | tee -a "$LOG"
exit "$rc"
