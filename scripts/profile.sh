#!/usr/bin/env bash
# Profiles the broker under one benchmark scenario: CPU samples of the
# broker process (of the bench process for S5, where the broker runs in it),
# a flame graph and the shares by part that docs/benchmarks.md quotes.
#
#   scripts/profile.sh S1 [seconds]        # S1, S2, S3, S4 (its S1 part; MariaDB on
#                                          # 127.0.0.1:3306, or MYSQL_URL), S5
#
# Needs a release build (`cargo build --release --workspace --features mysql`), Debian's linux-perf and
# inferno (`cargo install inferno`). Writes target/profile-<S>.{data,folded,svg}.
set -euo pipefail
cd "$(dirname "$0")/.."
scenario="${1:?scenario, e.g. S1}"
secs="${2:-6}"
out="target/profile-$scenario"
bench=target/release/webhook-bench
[ -x "$bench" ] || { echo "build first: cargo build --release --workspace --features mysql"; exit 2; }

mysql=none
[ "$scenario" = S4 ] && mysql="${MYSQL_URL:-mysql://root@127.0.0.1:3306}"
"$bench" --scenarios "$scenario" --mysql "$mysql" --duration $((secs + 5)) \
    >"$out.bench.txt" 2>"$out.bench.log" &
bench_pid=$!
if [ "$scenario" = S5 ]; then
    pid=$bench_pid
    # Skip the baselines that run first: wait for S5's own first second.
    until grep -qE "S5: +1s" "$out.bench.log"; do sleep 0.2; done
else
    pid=
    until [ -n "$pid" ]; do sleep 0.1; pid=$(pgrep -f 'release/webhook-broker$' | head -1 || true); done
    sleep 3
fi
perf record -F 499 --call-graph dwarf,16384 -p "$pid" -o "$out.data" -- sleep "$secs"
wait "$bench_pid"
perf script -i "$out.data" 2>/dev/null | inferno-collapse-perf --all >"$out.raw.folded"
python3 scripts/fold-simplify.py "$out.raw.folded" >"$out.folded"
inferno-flamegraph --minwidth 1 --title "webhook-broker $scenario ($(git rev-parse --short HEAD))" \
    "$out.folded" >"$out.svg"
grep '^|' "$out.bench.txt" || true
python3 scripts/profile-shares.py "$out.raw.folded"
echo "flame graph: $out.svg"
