#!/usr/bin/env bash
# The GPU suite (<= 9 minutes on one GPU): CUDA-only tests, cached vs uncached training throughput with AMP,
# inference timing at 1024^2 and 4096^2, and a time-boxed paper-protocol training on Drosophila fold 0.
# Results: runs/gpu_suite/gpu_suite.json and gpu_suite.md (or --out DIR). See benchmarks/gpu_suite.py --help.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/bundle${PYTHONPATH:+:$PYTHONPATH}"
exec python benchmarks/gpu_suite.py "$@"
