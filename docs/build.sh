#!/usr/bin/env bash
# Build the documentation with warnings as errors, executing the tutorial notebooks.
#
#   docs/build.sh                        # run every notebook (as CI does)
#   GENEPT_NB_EXECUTE=cache docs/build.sh  # rerun only notebooks whose code changed
#   GENEPT_NB_EXECUTE=off docs/build.sh    # no execution (pages without outputs)
#
# Offline: notebooks use the gene cards and the MiniLM shipped with the packages.
# Output: docs/_build/html/index.html. Extra arguments go to sphinx-build.
set -euo pipefail
cd "$(dirname "$0")/.."
export GENEPT_NB_EXECUTE="${GENEPT_NB_EXECUTE:-force}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
unset MPLBACKEND        # the kernels need their inline backend for figures
rm -rf docs/generated   # autosummary stubs are regenerated from the code
fresh=()
[ "$GENEPT_NB_EXECUTE" = force ] && fresh=(-E)   # re-read every page, so every notebook runs
exec python -m sphinx -W --keep-going -b html "${fresh[@]}" "$@" docs docs/_build/html
