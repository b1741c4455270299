#!/usr/bin/env bash
# The property-based tests with Hypothesis's "deep" profile (10,000 examples per property, tests/conftest.py) instead
# of CI's 200: every reader, the vocabulary round trips, the samplers, evaluate() and the CRF. Prints pytest's report
# with each test's duration; a failure prints the falsifying example (keep it as an @example in the test).
#   bash bench/fuzz.sh [PYTEST ARGS]      e.g. bash bench/fuzz.sh tests/test_readers_fuzz.py -k npz
set -euo pipefail
cd "$(dirname "$0")/.."
tests=(tests/test_readers_fuzz.py tests/core/test_vocab_properties.py tests/lm/test_sampler_properties.py
       tests/tagging/test_crf_properties.py)
if [ $# -gt 0 ]; then tests=("$@"); fi
HYPOTHESIS_PROFILE=deep python -m pytest -q -p no:cacheprovider --hypothesis-show-statistics --durations=0 "${tests[@]}"
