#!/usr/bin/env bash
# Journal benchmark (bench/JOURNAL.md): builds kevd-bench and kevctl in release mode from the bench package
# (bench/Package.swift) into .build-bench (its own scratch directory, so it never waits on the lock of the main
# .build), then runs `kevd-bench journal`. `bench/run journal` runs the same; this script adds --profile.
#
#   bench/journal_bench.sh                       # all policies, 1,000,000 events, 3 runs each
#   bench/journal_bench.sh --count 200000        # any kevd-bench journal option is passed on
#   bench/journal_bench.sh --profile [OPTIONS]   # perf profile of the daemon-driven journal (batch 1 ms)
#
# A benchmark, not a test: prints tables, writes JSON to bench/results/ (git-ignored), asserts no timing.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch="$PWD/.build-bench"

# One build at a time: the machine has two cores, and the products share most of their modules.
swift build -c release --package-path bench --product kevd-bench --scratch-path "$scratch"
swift build -c release --package-path bench --product kevctl --scratch-path "$scratch"
bench="$scratch/release/kevd-bench"

if [[ "${1:-}" != --profile ]]; then
    exec "$bench" journal --results bench/results "$@"
fi
shift
command -v perf >/dev/null || { echo "journal_bench.sh: --profile needs perf (linux-perf)" >&2; exit 1; }
mkdir -p bench/results
data="bench/results/journal-perf-$(date +%Y%m%d-%H%M%S).data"
# cpu-clock: a software event, so it works without hardware counters (VMs). Swift keeps frame pointers on
# x86-64 Linux, so plain -g gives whole call chains.
perf record -e cpu-clock -g -o "$data" -- \
    "$bench" journal --results bench/results --measure journal --policy batch:1ms "$@"
# Reports go to files first: `head` closing a pipe early would trip pipefail.
perf report -i "$data" --no-children --sort sym --stdio -g none >"$data.self.txt" 2>/dev/null
perf report -i "$data" --children --sort sym --stdio -g none >"$data.children.txt" 2>/dev/null
demangle() { if command -v swift >/dev/null; then swift demangle --simplified; else cat; fi; }
echo
echo "== top frames by own time ($data.self.txt)"
grep -v -e '^#' -e '^$' "$data.self.txt" | head -25 | demangle || true
echo
echo "== top frames including callees ($data.children.txt)"
grep -v -e '^#' -e '^$' "$data.children.txt" | head -40 | demangle || true
