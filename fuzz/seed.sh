#!/usr/bin/env bash
# Seeds each fuzz target's corpus from real inputs: traces of the shipped scenarios, the
# logs and manifest of a short recorded run, the scenario files (good and bad), schedule
# files the fuzzer wrote, and client frames. Usage: fuzz/seed.sh (from the repository).
set -euo pipefail
cd "$(dirname "$0")/.."
retrace=target/release/retrace
[ -x "$retrace" ] || cargo build --release --quiet
c=fuzz/corpus
mkdir -p $c/{trace,replay_tui,log,wire,client_frame,scenario,schedule,manifest}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for s in pingpong twopc raft-double-vote kv-ack-before-replicate; do
    "$retrace" run scenarios/$s.toml -o "$work/$s.trace" >/dev/null 2>&1 || true
    # Traces over the fuzzer's 1 MiB input bound are cut to it (a torn tail is an input too).
    head -c 1048576 "$work/$s.trace" > $c/trace/$s.trace
done
# Small traces too: the fuzzer mutates a 10 KB input far faster than a 1 MB one.
for s in kv-ack-before-replicate raft-double-vote twopc-presumed-commit webstack-lunchtime webcache-stale; do
    sed -e '/^max_events/d' -e 's/^model = .*/&\nmax_events = 400/' scenarios/$s.toml > "$work/small-$s.toml"
    "$retrace" run "$work/small-$s.toml" -o $c/trace/small-$s.trace >/dev/null 2>&1 || true
done
cp $c/trace/small-kv-* $c/trace/kv-* $c/replay_tui/
# Small segments and frequent snapshots, so the log corpus has segment headers past the
# first and snapshot records.
"$retrace" cluster scenarios/pingpong.toml --record "$work/rec" --duration 1s --closed-loop 1 \
    --segment-size 4096 --retain all --snapshot-every 50 >/dev/null 2>&1
for f in "$work"/rec/*.log "$work"/rec/*.log.[0-9]*; do
    head -c 1048576 "$f" > "$c/log/$(basename "$f")"
    head -c 65536 "$f" > "$c/wire/$(basename "$f")"
done
cp "$work/rec/manifest.json" $c/manifest/
cp scenarios/*.toml tests/data/bad-scenarios/*.toml $c/scenario/
"$retrace" fuzz scenarios/kv-fuzz.toml --cases 200 --jobs 1 --out "$work/fuzz" >/dev/null 2>&1 || true
find "$work/fuzz" -name '*.schedule.json' -exec cp {} $c/schedule/ \; 2>/dev/null || true
printf '{"model":"kv","scenario":"kv.toml","seed":1,"strategy":"random","invariant":"x","schedule":{"choices":[{"order":1,"fault":2}],"timed":[{"at_ns":5,"fault":3,"lasts_ns":9}],"workload_shift_ns":7}}' > $c/schedule/hand.json
req='{"Op":{"Put":{"key":"k1","value":"v"}}}'
printf "\x00\x00\x00\x$(printf %02x ${#req})%s" "$req" > $c/client_frame/put
printf 'PUT /kv/k1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nv1GET /kv/k1 HTTP/1.1\r\n\r\n' > $c/client_frame/http
echo "seeded $(find $c -type f | wc -l) inputs under $c"
