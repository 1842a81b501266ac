#!/usr/bin/env bash
# The main job: the embedded demo pipeline (tiny model, synthetic data, all stages, scores).
# Usage: scripts/demo.sh [OUTPUT_DIR] [KEY=VALUE overrides...]     (default output: outputs/demo)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/bootstrap.sh"
# shellcheck disable=SC1091
source "${MEDVLM_VENV:-$root/.venv}/bin/activate"
output=${1:-outputs/demo}
shift || true
cd "$root"
exec medvlm demo --output "$output" "$@"
