#!/usr/bin/env bash
# Profiles strangler's pass-through hot path: the origin nginx of run.sh on :18080, strangler
# (conf/strangler-pass.toml, one worker thread) on :18600 under valgrind's callgrind (default)
# or `perf record -e cpu-clock` (PROFILER=perf; hardware counters are not available in this
# VM), driven by wrk for DUR. Prints the top functions; everything started is stopped by PID.
# SCENARIO=shadow profiles the 100% shadow target instead (conf/strangler-shadow.toml, the
# second origin on :18081) and prints the comparisons made, to divide the costs by;
# SCENARIO=shadow-slow the 1 s candidate (conf/strangler-shadow-slow.toml, examples/slow_origin
# on :18082).
#
#   bash bench/profile.sh                       # callgrind, wrk -c32 -d15s on /
#   PROFILER=perf DUR=10s CONNS=256 bash bench/profile.sh
#   SCENARIO=shadow DUR=8s bash bench/profile.sh
#
# Needs a release build (debug = "line-tables-only" gives symbols) and valgrind or linux-perf.
# State goes to $BENCH_STATE/profile (default /tmp/strangler-bench-repo/profile).
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH/.." && pwd)
STATE=${BENCH_STATE:-/tmp/strangler-bench-repo}/profile
BIN=${STRANGLER_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/strangler}
PROFILER=${PROFILER:-callgrind}
DUR=${DUR:-15s}
CONNS=${CONNS:-32}
URLPATH=${URLPATH:-/}
TOP=${TOP:-40}
SCENARIO=${SCENARIO:-pass}
case $SCENARIO in
  pass) CONFIG=$BENCH/conf/strangler-pass.toml ;;
  shadow) CONFIG=$BENCH/conf/strangler-shadow.toml ;;
  shadow-slow) CONFIG=$BENCH/conf/strangler-shadow-slow.toml ;;
  *) echo "SCENARIO is pass, shadow or shadow-slow" >&2; exit 2 ;;
esac

log() { printf '[profile.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in 18080 18081 18082 18600 18700; do port_free "$p" || { log "port $p busy (a benchmark running?)"; exit 1; }; done
[[ -x $BIN ]] || { log "$BIN missing: cargo build --release"; exit 1; }

umask 022
rm -rf "$STATE"; mkdir -p "$STATE/origin/www" "$STATE/origin/tmp" "$STATE/origin2/www" \
  "$STATE/origin2/tmp" "$STATE/strangler"
chmod 755 "$STATE" "$(dirname "$STATE")" "$STATE"/origin* 2>/dev/null || true
head -c 16384 /dev/zero | tr '\0' 'b' > "$STATE/origin/www/big.bin"
BIG_MTIME=1767225600   # as in run.sh: the same Last-Modified and ETag on every origin
touch -d "@$BIG_MTIME" "$STATE/origin/www/big.bin"
cp -p "$STATE/origin/www/big.bin" "$STATE/origin2/www/big.bin"
ORIGIN_PID= ; ORIGIN2_PID= ; SLOW_PID= ; PROF_PID=
cleanup() {
  [[ -n $PROF_PID ]] && kill -TERM -- "-$PROF_PID" 2>/dev/null || true
  [[ -n $ORIGIN_PID ]] && kill -TERM "$ORIGIN_PID" 2>/dev/null || true
  [[ -n $ORIGIN2_PID ]] && kill -TERM "$ORIGIN2_PID" 2>/dev/null || true
  [[ -n $SLOW_PID ]] && kill -TERM "$SLOW_PID" 2>/dev/null || true
}
trap cleanup EXIT

nginx -p "$STATE/origin/" -e "$STATE/origin/error.log" -c "$BENCH/conf/nginx-backend.conf"
for _ in $(seq 50); do [[ -s $STATE/origin/nginx.pid ]] && break; sleep 0.1; done
ORIGIN_PID=$(cat "$STATE/origin/nginx.pid")
if [[ $SCENARIO == shadow ]]; then
  nginx -p "$STATE/origin2/" -e "$STATE/origin2/error.log" -c "$BENCH/conf/nginx-backend2.conf"
  for _ in $(seq 50); do [[ -s $STATE/origin2/nginx.pid ]] && break; sleep 0.1; done
  ORIGIN2_PID=$(cat "$STATE/origin2/nginx.pid")
fi
if [[ $SCENARIO == shadow-slow ]]; then
  SLOW_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/examples/slow_origin
  [[ -x $SLOW_BIN ]] || { log "$SLOW_BIN missing: cargo build --release --example slow_origin"; exit 1; }
  "$SLOW_BIN" --port 18082 --delay 1 --mtime "$BIG_MTIME" > "$STATE/slow_origin.log" 2>&1 &
  SLOW_PID=$!
fi

env=(env -C "$STATE/strangler" BENCH_PORT=18600 BENCH_ADMIN_PORT=18700 TOKIO_WORKER_THREADS=1)
case $PROFILER in
  callgrind) setsid "${env[@]}" valgrind --tool=callgrind --callgrind-out-file="$STATE/callgrind.out" \
               "$BIN" run -c "$CONFIG" > "$STATE/strangler.log" 2>&1 & ;;
  perf) setsid "${env[@]}" perf record -e cpu-clock -F 999 -g -o "$STATE/perf.data" \
               "$BIN" run -c "$CONFIG" > "$STATE/strangler.log" 2>&1 & ;;
  *) log "PROFILER is callgrind or perf"; exit 2 ;;
esac
PROF_PID=$!
for _ in $(seq 300); do curl -s -o /dev/null --max-time 2 http://127.0.0.1:18600/ && break; sleep 0.2; done
curl -sf -o /dev/null http://127.0.0.1:18600/ || { log "strangler did not start: $STATE/strangler.log"; exit 1; }

log "load: wrk -t1 -c$CONNS -d$DUR http://127.0.0.1:18600$URLPATH ($PROFILER)"
wrk -t1 -c"$CONNS" -d"$DUR" --latency "http://127.0.0.1:18600$URLPATH" | tee "$STATE/wrk.txt" >&2
if [[ $SCENARIO == shadow* ]]; then
  sleep 2   # the last mirrors finish
  curl -s http://127.0.0.1:18700/metrics | grep -E '^strangler_shadow_(comparisons|dropped)_total' \
    | tee "$STATE/shadow.txt" >&2 || true
fi
kill -TERM -- "-$PROF_PID" 2>/dev/null || true
for _ in $(seq 300); do kill -0 "$PROF_PID" 2>/dev/null || break; sleep 0.2; done
PROF_PID=

case $PROFILER in
  callgrind)
    echo "## callgrind, inclusive (top $TOP)"
    { callgrind_annotate --inclusive=yes "$STATE/callgrind.out" 2>/dev/null || true; } | head -$((TOP + 25)) || true
    echo "## callgrind, self (top $TOP)"
    { callgrind_annotate "$STATE/callgrind.out" 2>/dev/null || true; } | head -$((TOP + 25)) || true ;;
  perf)
    echo "## perf, self (top $TOP)"
    perf report -i "$STATE/perf.data" --no-children --sort symbol --stdio 2>/dev/null \
      | grep -E "^ +[0-9]" | head -"$TOP" || true
    echo "## perf, children (top $TOP)"
    perf report -i "$STATE/perf.data" --children --sort symbol --stdio 2>/dev/null \
      | grep -E "^ +[0-9]" | head -"$TOP" || true ;;
esac
log "raw profile in $STATE"
