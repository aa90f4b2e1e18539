#!/usr/bin/env bash
# Creates bench/.venv-litellm with a pinned LiteLLM proxy for bench/gateway_vs_litellm.py.
# LiteLLM is a benchmark baseline, not a project dependency: it never enters .venv.
# Idempotent: does nothing when the pinned version is already installed.
#
#   bash bench/setup_litellm.sh            # or: make bench-litellm (runs it first)
set -euo pipefail
# 1.108.7: the newest release whose [proxy] extra resolves from PyPI as seen from here (1.108.9+
# pin litellm-enterprise / litellm-proxy-extras ".post" builds, and 1.110.x a litellm-proxy package,
# that the index does not serve); the 1.108 line is the one DESIGN.md measured "for scale".

LITELLM_VERSION="1.108.7"
PYTHON="${PYTHON:-python3.11}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv-litellm"
STAMP="$VENV/.installed-litellm-$LITELLM_VERSION"

if [[ -f "$STAMP" && -x "$VENV/bin/litellm" ]]; then
    exit 0
fi
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "litellm[proxy]==$LITELLM_VERSION"
rm -f "$VENV"/.installed-litellm-*
touch "$STAMP"
echo "LiteLLM $LITELLM_VERSION installed in $VENV"
