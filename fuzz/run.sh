#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 30; the long run: fuzz/run.sh 3600).
# Needs a nightly toolchain and cargo-fuzz. Fails on any panic, hang (10 s per input),
# allocation over 16 MiB (-malloc_limit_mb) or resident memory over 2 GiB, from inputs of
# at most 1 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
[ -d fuzz/corpus/replay_tui ] || bash fuzz/seed.sh
for t in trace replay_tui log wire client_frame scenario schedule manifest; do
    echo "== fuzz $t (${seconds}s)"
    (cd fuzz && cargo +nightly fuzz run --release "$t" "corpus/$t" -- \
        -max_total_time="$seconds" -max_len=1048576 -malloc_limit_mb=16 \
        -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 2>&1 | tail -n 12)
done
