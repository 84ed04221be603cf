#!/usr/bin/env bash
# Install requirements-image.lock into a virtual environment outside the image, with a CPU torch in
# place of the CUDA build: the reference ComfyUI for rehearsals and the audio-embedding check then run
# the versions the image ships (README, "The image lock").
#
#   scripts/install_from_lock.sh VENV_DIR TORCH [TORCH ...]
#
# TORCH: what provides torch (and torchvision/torchaudio, if wanted) on this machine, as pip
# arguments: a CPU wheel file, or a requirement such as torch==2.8.0 with --index-url. Every other
# package comes from the lock, hash-checked, at exactly its locked version and without resolving
# again (--no-deps). CUDA-only packages (triton, nvidia-*, sageattention) are left out. PYTHON picks
# the interpreter (default python3); the lock is made for 3.12, and its wheels also cover 3.11.
set -euo pipefail

VENV=${1:?usage: install_from_lock.sh VENV_DIR TORCH [TORCH ...]}
shift
[ "$#" -gt 0 ] || { echo "install_from_lock.sh: say what provides torch (a CPU wheel or a requirement)" >&2; exit 2; }
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LOCK=${LOCK:-$HERE/../requirements-image.lock}
PYTHON=${PYTHON:-python3}

filtered=$(mktemp)
trap 'rm -f "$filtered"' EXIT
# A lock entry is its "name==version \" line plus the indented --hash lines after it.
awk '
    /^[A-Za-z0-9]/ { name = tolower($1); sub(/==.*/, "", name)
                     skip = (name ~ /^(torch|torchvision|torchaudio|triton|sageattention|nvidia-.*)$/) }
    /^--/ { print; next }
    !skip { print }
' "$LOCK" >"$filtered"

"$PYTHON" -m venv "$VENV"
# The machine's pip configuration (extra indexes, a constraint file) must not change the locked set.
export PIP_CONFIG_FILE=/dev/null PIP_CONSTRAINT="" PIP_DISABLE_PIP_VERSION_CHECK=1
"$VENV/bin/pip" install --quiet --require-hashes --no-deps --only-binary=:all: -r "$filtered"
env -u PIP_CONFIG_FILE "$VENV/bin/pip" install --quiet --no-deps "$@"
"$VENV/bin/python" - <<'PY'
from importlib import metadata
print("installed from the lock:", ", ".join(
    f"{name} {metadata.version(name)}" for name in ("torch", "transformers", "diffusers", "peft", "accelerate", "numpy")))
PY
