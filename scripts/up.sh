#!/usr/bin/env bash
# The README's first command: set up, then run the main job end to end on embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec convcg up "$@"
