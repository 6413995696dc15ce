#!/usr/bin/env bash
# Create (or reuse) the BioImage Model Zoo environment for this bundle: a separate virtualenv, because
# bioimageio.core's PyTorch support pulls torchvision, and torchvision needs a torch matching it (torch 2.14.1 +
# torchvision 0.29.1), while the bundle's own environment keeps its torch.
#
#   bash tools/bioimageio_env.sh [VENV_DIR]      # default: .venv-bioimageio at the repository root
#   .venv-bioimageio/bin/bioimageio test PACKAGE_DIR/rdf.yaml
#   .venv-bioimageio/bin/python -m pytest -q tests/bioimageio_zoo
#
# SHARE_TORCH_FROM=.venv shares that virtualenv's torch when it is 2.14.1 (tools/side_env.sh), saving about 5 GB.
# VENV_DIR may also be given as BIOIMAGEIO_VENV; PYTHON picks the interpreter (default: python3).
# It installs, through pip's configured package index, the top-level pins below with every other package held at
# the versions of tools/bioimageio_constraints.txt (the environment this was tested in, frozen), and this
# repository in editable mode (the exporter and the agreement check use the bundle's `scripts` package).
# pydantic 2.12.5: bioimageio.spec 0.5.12.0 fails to serialise its file entries with pydantic 2.14 ("'index_key' is
# expected to be an integer or a string"), so `bioimageio test` refuses every package there.
# A stamp file records what was installed; a later run with the same pins and a working environment does nothing,
# otherwise the environment is rebuilt from scratch.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-${BIOIMAGEIO_VENV:-$REPO/.venv-bioimageio}}"
PYTHON="${PYTHON:-python3}"
# shellcheck source=tools/side_env.sh
source "$REPO/tools/side_env.sh"

TORCH_PINS=("torch==2.14.1" "torchvision==0.29.1")
BIOIMAGEIO_PINS=("bioimageio.core==0.11.0" "bioimageio.spec==0.5.12.0" "onnxruntime==1.32.0" "onnx==1.23.2"
                 "pydantic==2.12.5" "monai==1.6.1" "pytest==9.2.0")
CONSTRAINTS="$REPO/tools/bioimageio_constraints.txt"
STAMP="$VENV/.cellseg-bioimageio-env"
SHARED_SITE="$(side_env_shared_site "${TORCH_PINS[0]#torch==}")"
SPEC="v1 ${TORCH_PINS[*]} ${BIOIMAGEIO_PINS[*]} $(sha256sum "$CONSTRAINTS" | cut -c1-16) -e $REPO shared-torch=${SHARED_SITE:-none}"

check() {
    "$VENV/bin/python" - <<'EOF'
import bioimageio.core, bioimageio.spec, onnxruntime, torch, torchvision
import scripts, pytest
print(f"bioimageio.core {bioimageio.core.__version__} (spec {bioimageio.spec.__version__}), torch {torch.__version__}, "
      f"torchvision {torchvision.__version__}, onnxruntime {onnxruntime.__version__}, bundle scripts from {scripts.__file__}")
EOF
    [[ -x "$VENV/bin/bioimageio" ]] || { echo "missing $VENV/bin/bioimageio" >&2; return 1; }
}

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$SPEC" ]] && check >/dev/null 2>&1; then
    echo "BioImage Model Zoo environment up to date: $VENV"
    check
    exit 0
fi

start=$SECONDS
echo "Creating the BioImage Model Zoo environment in $VENV (minutes) ..."
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
side_env_share "$SHARED_SITE"
# torch first, on its own: the pins keep the resolver from trying other releases later
side_env_pip "${TORCH_PINS[@]}" -c "$CONSTRAINTS"
side_env_pip "${TORCH_PINS[@]}" "${BIOIMAGEIO_PINS[@]}" -e "$REPO" -c "$CONSTRAINTS"
check
echo "$SPEC" > "$STAMP"
echo "BioImage Model Zoo environment ready in $((SECONDS - start)) s: $VENV"
