#!/usr/bin/env bash
# Create (or reuse) the nnU-Net v2 environment for the peer benchmark (benchmarks/nnunet_peer.py,
# benchmarks/peer_benchmark.py): a separate virtualenv, never the bundle's runtime install, because nnunetv2
# pulls a CUDA build of torch (a ~6 GB environment) unless a CPU torch is installed first.
#
#   bash tools/nnunet_env.sh [VENV_DIR]          # default: .venv-nnunet at the repository root
#   .venv-nnunet/bin/python benchmarks/nnunet_peer.py all --budget_min 45
#
# VENV_DIR may also be given as NNUNET_VENV; PYTHON picks the interpreter (default: python3); TORCH_PIN the torch
# build (default torch==2.13.0, the CPU wheel the bundle is tested with: pip's configured index serves the CPU
# build here; elsewhere add --index-url https://download.pytorch.org/whl/cpu through PIP_INDEX_URL).
# It installs, through pip's configured package index: torch (first, on its own), nnunetv2 2.8.1 and this
# repository in editable mode (the bundle's `scripts` package: nnunet_peer.py converts and scores with it). A stamp
# file records what was installed; a later run with the same pins and a working environment does nothing.
#
# torchvision: nnunetv2 pulls timm, timm pulls torchvision. Without a CPU torchvision on the index, pip installs the
# CUDA build, which cannot load next to the CPU torch ("operator torchvision::nms does not exist") as soon as
# something imports timm; nnU-Net imports it only when its trainer search walks into its primus trainers, which
# nnunet_peer.py avoids by copying the budget trainer into nnU-Net's top trainer folder (found first). With
# TORCH_INDEX_URL set (e.g. https://download.pytorch.org/whl/cpu), torch and the matching torchvision
# (TORCHVISION_PIN, default torchvision==0.28.0) come from that index instead, CPU builds both.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-${NNUNET_VENV:-$REPO/.venv-nnunet}}"
PYTHON="${PYTHON:-python3}"
TORCH_PIN="${TORCH_PIN:-torch==2.13.0}"
NNUNET_PIN="nnunetv2==2.8.1"
STAMP="$VENV/.cellseg-nnunet-env"
SPEC="v1 $TORCH_PIN ${TORCH_INDEX_URL:-} $NNUNET_PIN -e $REPO"

check() {
    "$VENV/bin/python" - <<'PY'
import nnunetv2, torch, scripts
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
print(f"nnunetv2 from {nnunetv2.__path__[0]}, torch {torch.__version__} (CUDA build: {torch.version.cuda}), "
      f"bundle scripts from {scripts.__file__}")
PY
    for tool in nnUNetv2_extract_fingerprint nnUNetv2_plan_experiment nnUNetv2_preprocess nnUNetv2_train nnUNetv2_predict; do
        [[ -x "$VENV/bin/$tool" ]] || { echo "missing $VENV/bin/$tool" >&2; return 1; }
    done
}

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$SPEC" ]] && check >/dev/null 2>&1; then
    echo "nnU-Net environment up to date: $VENV"
    check
    exit 0
fi

start=$SECONDS
echo "Creating the nnU-Net environment in $VENV (minutes) ..."
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --progress-bar off)
pip_install() {
    "${PIP[@]}" "$@" 2>&1 | { grep -v "^WARNING: Location '.*' is ignored" || true; }
}
# the CPU torch first, on its own, then nnunetv2 with the same pin so that the resolver keeps it
if [[ -n "${TORCH_INDEX_URL:-}" ]]; then
    pip_install "$TORCH_PIN" "${TORCHVISION_PIN:-torchvision==0.28.0}" --index-url "$TORCH_INDEX_URL"
else
    pip_install "$TORCH_PIN"
fi
pip_install "$TORCH_PIN" "$NNUNET_PIN" -e "$REPO"
check
echo "$SPEC" > "$STAMP"
echo "nnU-Net environment ready in $((SECONDS - start)) s: $VENV"
