#!/usr/bin/env bash
# seqrec against ONNX Runtime on the same random RecBole-shaped models, in one run (docs/onnxruntime.md).
#   pip install -r scripts/ort/requirements.txt
#   scripts/compare-ort.sh [--rounds N] [--iters N] [--threads T] [--only MODEL ...] [--isa LEVEL ...] [--out DIR]
# Builds the release `seqrec` binary, writes the models, exports them to ONNX, checks every graph's
# top-10 against `seqrec score` (exit 1 on a difference), then benches both runtimes back to back
# and prints a markdown table. PYTHON selects the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import numpy, onnx, onnxruntime, safetensors' 2>/dev/null; then
    echo "error: $PYTHON lacks numpy, onnx, onnxruntime or safetensors: pip install -r scripts/ort/requirements.txt" >&2
    exit 2
fi
cargo build --release --quiet -p seqrec-trainer --bin seqrec
exec "$PYTHON" scripts/ort/compare.py --seqrec "${CARGO_TARGET_DIR:-target}/release/seqrec" "$@"
