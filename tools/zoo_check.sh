#!/usr/bin/env bash
# The MONAI Model Zoo's own checks on this bundle, placed as a zoo contribution: models/<name>/ in a scratch clone
# of a Project-MONAI/model-zoo checkout (a work tree or a bare git dir; nothing of it is copied into this repo).
#
# Usage (from the repository root):  bash tools/zoo_check.sh /path/to/model-zoo [archive.zip]
#   archive.zip: the packaged bundle (default: tools/package_bundle.py --no-git-check into a temporary folder)
#   PYTHON: the interpreter with torch and MONAI (default: python); FORMAT_PYTHON: the one with black, isort, flake8
#   (+ bugbear, comprehensions, executable, pep8-naming) and pre-commit-hooks (default: PYTHON)
#
# Runs, offline, in the scratch clone:
#   1. ci/verify_bundle.py -m min (the zoo's CPU premerge) and -m full (files, version, metadata schema, properties,
#      verify_net_in_out, ckpt_export): the schema is this repo's tools/schemas copy, where the zoo's
#      ci/prepare_schema.py would download it;
#   2. its formatting settings (setup.cfg, pyproject.toml, .pre-commit-config.yaml) on models/<name>/: isort --check,
#      black --check --skip-magic-trailing-comma (as its runtests.sh), flake8, the JSON hook pretty-format-json
#      --no-sort-keys --indent=4 (checking, not fixing) and its other file hooks but check-added-large-files.
# Prints each command and its output; exits non-zero on the first failure.
set -euo pipefail

ZOO=${1:?usage: bash tools/zoo_check.sh /path/to/model-zoo [archive.zip]}
ARCHIVE=${2:-}
PYTHON=${PYTHON:-python}
FORMAT_PYTHON=${FORMAT_PYTHON:-$PYTHON}
NAME=microscopy_cell_segmentation
REPO=$(cd "$(dirname "$0")/.." && pwd)
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT

run() { echo "+ $*"; "$@"; }

if [[ -z "$ARCHIVE" ]]; then
    run "$PYTHON" "$REPO/tools/package_bundle.py" --bundle "$REPO/bundle" --out "$SCRATCH/dist" --no-git-check
    ARCHIVE=$(ls "$SCRATCH"/dist/${NAME}_v*.zip)
fi
git clone -q "$ZOO" "$SCRATCH/zoo"
echo "zoo: $(git -C "$SCRATCH/zoo" log -1 --format='%H %cd')"
"$PYTHON" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" \
    "$ARCHIVE" "$SCRATCH/zoo/models"
BUNDLE=$SCRATCH/zoo/models/$NAME
mkdir -p "$BUNDLE/eval"
cp "$REPO/tools/schemas/meta_schema_20240725.json" "$BUNDLE/eval/schema.json"

cd "$SCRATCH/zoo"
export PYTHONPATH=$PWD  # as the zoo's CI scripts set it
for mode in min full; do
    run "$PYTHON" ci/verify_bundle.py -b "$NAME" -p models -m "$mode"
done
rm -rf "$BUNDLE/eval" "$BUNDLE/models/verify_model.ts"

run "$FORMAT_PYTHON" -m isort --check "models/$NAME"
run "$FORMAT_PYTHON" -m black --skip-magic-trailing-comma --check "models/$NAME"
run "$FORMAT_PYTHON" -m flake8 "models/$NAME" --count --statistics
mapfile -t JSONS < <(find "models/$NAME" -name '*.json' | sort)
run "$FORMAT_PYTHON" -m pre_commit_hooks.pretty_format_json --no-sort-keys --indent=4 "${JSONS[@]}"
# the zoo's other pre-commit hooks on the text files (the fixers fix the scratch copy and fail when they had to);
# not check-added-large-files: a contribution carries large_files.json instead of models/model.pt
mapfile -t TEXTS < <(find "models/$NAME" -type f ! -path "models/$NAME/models/*" | sort)
mapfile -t PYS < <(find "models/$NAME" -name '*.py' | sort)
for hook in end_of_file_fixer trailing_whitespace_fixer mixed_line_ending detect_private_key check_case_conflict; do
    run "$FORMAT_PYTHON" -m "pre_commit_hooks.$hook" "${TEXTS[@]}"
done
run "$FORMAT_PYTHON" -m pre_commit_hooks.check_docstring_first "${PYS[@]}"
echo "zoo checks passed: $NAME ($(basename "$ARCHIVE"))"
