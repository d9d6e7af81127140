#!/usr/bin/env bash
# The suite's stability check: test modules (by default those that compare floats computed
# by different batch sizes, processes, threads or code paths) run with 1 and with 2 torch
# threads, then once more while busy loops keep every core of the machine busy. Every run
# must pass. Usage: tests/stability.sh [pytest arguments, e.g. test modules]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}

if [ "$#" -gt 0 ]; then
    args=("$@")
else
    args=(
        tests/report/test_predictions.py tests/models/test_capture.py
        tests/interpret/test_interpret_properties.py tests/interpret/test_interpret_flow.py
        tests/interpret/test_interpret_targets.py tests/interpret/test_capture_fusion.py
        tests/integrations/test_pyhealth.py tests/integrations/test_hf_adapter.py
        tests/explain/test_local_engine.py tests/explain/test_rows.py
        tests/explain/test_ray_engine.py tests/explain/test_ray_meds.py
        tests/robustness/test_size_limits.py tests/robustness/test_concurrent_runs.py
        tests/cli/test_cli.py tests/cli/test_cli_options.py
    )
fi

run() {
    echo "== $1 torch thread(s)${2:+, $2}"
    EHRLENS_TEST_THREADS=$1 "$PY" -m pytest -q -p no:cacheprovider "${args[@]}"
}

run 1
run 2
burners=()
stop_burners() { for pid in "${burners[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap stop_burners EXIT
for _ in $(seq "$(nproc)"); do
    (while :; do :; done) &
    burners+=("$!")
done
run 1 "every core kept busy by $(nproc) busy loops"
echo "stable: every run passed"
