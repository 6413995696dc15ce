#!/usr/bin/env bash
# Create (or reuse) the MONAI Label environment for this bundle: a separate virtualenv, because MONAI Label
# 0.8.5 needs torchvision, and torchvision needs a torch matching it (torch 2.14.1 + torchvision 0.29.1), while
# the bundle's own environment keeps its torch.
#
#   bash tools/monailabel_env.sh [VENV_DIR]      # default: .venv-monailabel at the repository root
#   source .venv-monailabel/bin/activate         # then: monailabel apps ..., monailabel start_server ...
#
# SHARE_TORCH_FROM=.venv shares that virtualenv's torch when it is 2.14.1 (tools/side_env.sh), saving about 5 GB.
# VENV_DIR may also be given as MONAILABEL_VENV; PYTHON picks the interpreter (default: python3).
# It installs, through pip's configured package index:
#   torch 2.14.1, torchvision 0.29.1, monailabel 0.8.5 with pydicom 2.4.4, pynetdicom 2.0.2,
#   dicomweb-client 0.59.1 (the versions monailabel 0.8.5 works with), monai 1.6.1 (the bundle's version),
#   pytest, and this repository in editable mode (the bundle's `scripts` package and its dependencies).
# A stamp file records what was installed; a later run with the same pins and a working environment
# does nothing, otherwise the environment is rebuilt from scratch.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-${MONAILABEL_VENV:-$REPO/.venv-monailabel}}"
PYTHON="${PYTHON:-python3}"
# shellcheck source=tools/side_env.sh
source "$REPO/tools/side_env.sh"

TORCH_PINS=("torch==2.14.1" "torchvision==0.29.1")
MONAILABEL_PINS=("monailabel==0.8.5" "monai==1.6.1" "pydicom==2.4.4" "pynetdicom==2.0.2" "dicomweb-client==0.59.1")
STAMP="$VENV/.cellseg-monailabel-env"
SHARED_SITE="$(side_env_shared_site "${TORCH_PINS[0]#torch==}")"
SPEC="v1 ${TORCH_PINS[*]} ${MONAILABEL_PINS[*]} pytest -e $REPO shared-torch=${SHARED_SITE:-none}"

check() {
    "$VENV/bin/python" - <<'EOF'
import monailabel, torch, torchvision
import monailabel.tasks.infer.bundle, monailabel.tasks.train.bundle, monailabel.transform.post
import scripts, pytest
print(f"monailabel {monailabel.__version__}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"bundle scripts from {scripts.__file__}")
EOF
}

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$SPEC" ]] && check >/dev/null 2>&1; then
    echo "MONAI Label environment up to date: $VENV"
    check
    exit 0
fi

start=$SECONDS
echo "Creating the MONAI Label environment in $VENV (several GB; minutes) ..."
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
side_env_share "$SHARED_SITE"
# no CUDA kernel build for sam2 (a monailabel dependency this bundle does not use; the app runs with sam2 off)
export SAM2_BUILD_CUDA=0
# torch first, on its own: the pins keep the resolver from trying other releases later
side_env_pip "${TORCH_PINS[@]}"
side_env_pip "${TORCH_PINS[@]}" "${MONAILABEL_PINS[@]}" pytest -e "$REPO"
check
echo "$SPEC" > "$STAMP"
echo "MONAI Label environment ready in $((SECONDS - start)) s: $VENV"
