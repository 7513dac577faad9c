#!/usr/bin/env bash
# The long runs: every test marked @pytest.mark.stress (`make stress` calls this).
#
#   scripts/stress.sh [pytest args...]
#
# * installs atheris into .venv when it is missing (PyPI wheel; if that fails
#   the atheris run is skipped and says so), for tests/reliability/fuzz_server.py;
# * collects the figures the tests measure (chaos cuts, fuzz cases, load
#   throughput/fairness/RSS, idle cost) into build/reliability-figures.jsonl
#   and prints them at the end (they go into docs/reliability.md);
# * exit status is pytest's; "no tests collected" (5) counts as success.
#
# Environment: NIMBUS_FUZZ_STRESS (hypothesis examples per property, default
# 34000: >= 100 000 cases), NIMBUS_ATHERIS_RUNS (default 500000).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=.venv/bin/python
[[ -x "$PY" ]] || { echo "no .venv: run 'make setup' first" >&2; exit 2; }

if ! "$PY" -c 'import atheris' >/dev/null 2>&1; then
    echo "[stress] installing atheris (coverage-guided fuzzing)"
    "$PY" -m pip install -q atheris >/dev/null 2>&1 || echo "[stress] atheris did not install: its run will be skipped"
fi

mkdir -p build
FIGURES="$(pwd)/build/reliability-figures.jsonl"
: >"$FIGURES"
export NIMBUS_RELIABILITY_FIGURES="$FIGURES"

start=$SECONDS
.venv/bin/pytest tests -m stress -p no:cacheprovider --durations=25 "$@"
rc=$?
if ((rc == 5)); then
    echo "no stress tests collected (@pytest.mark.stress)"
    rc=0
fi
echo
echo "[stress] $((SECONDS - start)) s; figures ($FIGURES):"
cat "$FIGURES" 2>/dev/null || true
exit $rc
