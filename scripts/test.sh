#!/usr/bin/env bash
# The test suite. Default: everything not marked slow.
#   scripts/test.sh               fast tests
#   scripts/test.sh -q -x         fast tests, with any pytest arguments (still the fast selection)
#   scripts/test.sh -m slow       the slow integration tests (shortened demo, distributed runs)
#   scripts/test.sh tests/unit -k recipe     any pytest arguments; a -m of your own replaces "not slow"
# Real-data tests run when MEDVLM_REAL_DATA points at the shared benchmark samples
# (default: ../shared/data beside the checkout, when it exists) and skip otherwise.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/bootstrap.sh"
# shellcheck disable=SC1091
source "${MEDVLM_VENV:-$root/.venv}/bin/activate"
if [[ -z "${MEDVLM_REAL_DATA:-}" && -d "$root/../shared/data" ]]; then
  export MEDVLM_REAL_DATA="$root/../shared/data"
fi
cd "$root"
has_marker=false
for arg in "$@"; do
  [[ $arg == -m || $arg == -m?* ]] && has_marker=true
done
if ! $has_marker; then
  set -- -m "not slow" "$@"
fi
exec python -m pytest "$@"
