#!/usr/bin/env bash
# strangler's data-path benchmark: strangler (release build) side by side with nginx and HAProxy.
#
# Adapted from the project's shared reverse-proxy harness (shared/bench/run.sh and report.py,
# by the strangler team, 2026-11): same process control (by PID, never by name), same
# interleaved wrk rounds and same "ratio to nginx in the same round" arithmetic. Added here:
# strangler targets with one config per scenario (conf/strangler-*.toml), a 1 s and a
# never-answering candidate (slow_origin.py), nginx `mirror` to the slow candidate, peak RSS
# (VmHWM) of every target, strangler's shadow counters, and p50/p99 ratios.
#
#   bash bench/run.sh                        # builds strangler (cargo build --release), runs all
#   REPS=5 DUR=5s bash bench/run.sh          # less noise
#   TARGETS="nginx strangler" PATHS=/ bash bench/run.sh
#
# Targets (each round runs every target once per scenario, start rotated each round):
#   direct            wrk straight to the origin nginx (:18080), no proxy
#   nginx             nginx proxy_pass, upstream keepalive, 1 worker   <- reference of "x nginx"
#   nginx-2w          the same, 2 workers
#   nginx-mirror      as nginx + `mirror` of every request to the second origin (:18081)
#   nginx-mirror-slow as nginx + `mirror` to the 1 s candidate (:18082)
#   haproxy           HAProxy, nbthread 1, keep-alive and server-side reuse
#   strangler         pass-through: one prefix route in stage legacy, TOKIO_WORKER_THREADS=1
#   strangler-2w      the same with 2 worker threads
#   strangler-canary  stage canary, weight 50: legacy :18080, candidate :18081
#   strangler-shadow  stage shadow, sample 1.0, compare on: mirror to :18081
#   strangler-shadow-slow  as strangler-shadow, candidate answers after 1 s (:18082)
#   strangler-side-slow    control for it: pass-through, while a second wrk (1024 connections,
#                          shadow.max_in_flight) drives the 1 s candidate directly, so that the
#                          candidate's traffic loads the two cores without strangler sending it
#   strangler-shadow-hang  as strangler-shadow, candidate never answers (:18083)
#   (+ PUT_CMD, as in the shared harness: any other proxy on $PUT_PORT forwarding to :18080)
#
# Knobs (environment): DUR=3s REPS=3 CONNS="256" PATHS="/ /big" WRK_THREADS=1 TARGETS=...
#   BENCH_STATE=/tmp/strangler-bench-repo (writable, world-readable: nginx's worker reads
#   files under it), OUT=<raw output dir>, NO_BUILD=1 (use the binary as it is),
#   STRANGLER_BIN=<binary> (default ${CARGO_TARGET_DIR:-<repo>/target}/release/strangler),
#   SLOW_ORIGIN=rust (the 1 s and never candidates: examples/slow_origin.rs, hyper on one thread,
#   a few us of CPU per answer) or python (bench/slow_origin.py, asyncio: about as much CPU per
#   answer as the proxy, which then competes with the proxy for the two cores; runs 1-4 used it),
#   CANDIDATE_NICE=0 (nice value of the slow/never candidates; 19 makes their CPU count less
#   against the proxies sharing the cores, as a remote candidate would not),
#   PACE_MS=<ms> (each wrk connection waits this long after every answer: a fixed offered load
#   below saturation, conns x 1000 / PACE_MS requests/s at most, instead of wrk's default of
#   as many as the target can take; bench/paced.lua). Latency then measures what the target
#   adds at a given load, not how it queues when saturated.
#   PACE_LOAD=<fraction> (paced as PACE_MS, with the pause set before every round and scenario
#   from nginx's closed-loop req/s measured just then: conns x 1000 / (PACE_LOAD x that) ms,
#   less the answer time measured in a paced calibration run, so the offered load is the same
#   share of the machine's capacity on a fast or a slow host; calibration runs: capacity.tsv).
# Ports: 18080-18083 origins, 18100-18103 nginx, 18200 HAProxy, 186xx strangler proxies and
#   187xx their admin listeners; all on 127.0.0.1. Every load run is bounded by wrk -d; nothing
#   needs the internet (build with NO_BUILD=1, or dependencies already fetched).
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH/.." && pwd)
CONF=$BENCH/conf
STATE=${BENCH_STATE:-/tmp/strangler-bench-repo}
RUN=$STATE/run                      # runtime state: prefixes, pid registry, server logs
DUR=${DUR:-3s}
REPS=${REPS:-3}
CONNS=${CONNS:-"256"}
PATHS=${PATHS:-"/ /big"}
WRK_THREADS=${WRK_THREADS:-1}
CANDIDATE_NICE=${CANDIDATE_NICE:-0}
PACE_MS=${PACE_MS:-}
PACE_LOAD=${PACE_LOAD:-}
WRK_SCRIPT=()
if [[ -n $PACE_MS || -n $PACE_LOAD ]]; then WRK_SCRIPT=(-s "$BENCH/paced.lua"); export PACE_MS; fi
TARGETS=${TARGETS:-"direct nginx nginx-2w nginx-mirror nginx-mirror-slow haproxy strangler strangler-2w strangler-canary strangler-shadow strangler-shadow-slow strangler-side-slow strangler-shadow-hang"}
PUT_NAME=${PUT_NAME:-put}
PUT_PORT=${PUT_PORT:-18900}
OUT=${OUT:-$STATE/results/$(date +%Y%m%d-%H%M%S)}
PIDS=$RUN/pids                      # "name pid mode signal starttime" for all this harness started
STRANGLER_BIN=${STRANGLER_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/strangler}
SLOW_ORIGIN=${SLOW_ORIGIN:-rust}
SLOW_ORIGIN_BIN=${SLOW_ORIGIN_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/examples/slow_origin}
BIG_MTIME=1767225600                # 2026-01-01: same Last-Modified/ETag on every origin

declare -A PORT=(
  [backend]=18080 [backend2]=18081 [slow]=18082 [hang]=18083
  [direct]=18080 [nginx]=18100 [nginx-mirror]=18101 [nginx-2w]=18102 [nginx-mirror-slow]=18103
  [haproxy]=18200
  [strangler]=18600 [strangler-2w]=18601 [strangler-canary]=18602 [strangler-shadow]=18603
  [strangler-shadow-slow]=18604 [strangler-shadow-hang]=18605 [strangler-shadow-2w]=18606
  [strangler-side-slow]=18607
)
declare -A ROOTPID=()               # target -> pid whose process tree is charged CPU and RSS

log() { printf '[run.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------- process control (by PID)
alive() { kill -0 "$1" 2>/dev/null; }
starttime() { local l; l=$(cat "/proc/$1/stat" 2>/dev/null) || return 0; l=${l##*) }; set -- $l; echo "${20}"; }

# stop one registered entry: mode "pgrp" signals the whole process group we created
stop_entry() {
  local name=$1 pid=$2 mode=$3 sig=${4:-TERM} st=${5:-} i
  alive "$pid" || return 0
  # never signal a recycled pid: the process must be the very one we registered
  [[ -n $st && $(starttime "$pid") == "$st" ]] || { log "pid $pid is no longer $name; not touched"; return 0; }
  if [[ $mode == pgrp ]]; then kill -"$sig" -- "-$pid" 2>/dev/null || kill -"$sig" "$pid" 2>/dev/null || true
  else kill -"$sig" "$pid" 2>/dev/null || true; fi
  for i in $(seq 50); do alive "$pid" || return 0; sleep 0.1; done
  log "$name (pid $pid) still running 5s after SIG$sig; sending SIGKILL"
  if [[ $mode == pgrp ]]; then kill -KILL -- "-$pid" 2>/dev/null || true; fi
  kill -KILL "$pid" 2>/dev/null || true
}

stop_all() {
  [[ -f $PIDS ]] || return 0
  local name pid mode sig st
  # reverse order: proxies before backends
  while read -r name pid mode sig st; do stop_entry "$name" "$pid" "$mode" "$sig" "$st"; done < <(tac "$PIDS")
  rm -f "$PIDS"
}

register() { echo "$1 $2 $3 ${4:-TERM} $(starttime "$2")" >> "$PIDS"; }

wait_port() { # wait until http://127.0.0.1:$2/ answers (or, with $4 = tcp, accepts) (10 s)
  local name=$1 port=$2 pid=$3 how=${4:-http} i
  for i in $(seq 100); do
    if [[ $how == tcp ]]; then ! port_free "$port" && return 0
    elif curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/"; then return 0; fi
    alive "$pid" || { log "$name exited during startup (see $RUN/$name.log)"; return 1; }
    sleep 0.1
  done
  log "$name did not answer on :$port within 10s"; return 1
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start a foreground server in its own session; $! is then its pid and its process group id
# (setsid does not fork here: a background job of a non-interactive shell is no group leader)
start_fg() { # name port stop-signal http|tcp cmd...
  local name=$1 port=$2 sig=$3 how=$4; shift 4
  port_free "$port" || { log "port $port busy (not started by this harness?); skipping $name"; return 1; }
  setsid "$@" > "$RUN/$name.log" 2>&1 < /dev/null &
  local pid=$!
  disown "$pid" 2>/dev/null || true
  register "$name" "$pid" pgrp "$sig"
  ROOTPID[$name]=$pid
  wait_port "$name" "$port" "$pid" "$how"
}

start_nginx() { # name port conf  (nginx daemonizes; master pid comes from its pid file)
  local name=$1 port=$2 conf=$3 pfx=$RUN/$1 i
  port_free "$port" || { log "port $port busy; skipping $name"; return 1; }
  mkdir -p "$pfx/tmp" "$pfx/www"
  head -c 16384 /dev/zero | tr '\0' 'b' > "$pfx/www/big.bin"
  touch -d "@$BIG_MTIME" "$pfx/www/big.bin"
  rm -f "$pfx/nginx.pid"
  nginx -p "$pfx/" -e "$pfx/error.log" -c "$conf" >> "$RUN/$name.log" 2>&1 || { log "nginx $name failed to start"; return 1; }
  for i in $(seq 50); do [[ -s $pfx/nginx.pid ]] && break; sleep 0.1; done
  local pid; pid=$(cat "$pfx/nginx.pid")
  register "$name" "$pid" single
  ROOTPID[$name]=$pid
  wait_port "$name" "$port" "$pid"
}

start_slow() { # name port delay
  local cmd
  case $SLOW_ORIGIN in
    rust)   [[ -x $SLOW_ORIGIN_BIN ]] || { log "$SLOW_ORIGIN_BIN missing (cargo build --release --example slow_origin)"; return 1; }
            cmd=("$SLOW_ORIGIN_BIN") ;;
    python) have python3 || { log "python3 missing; no $1 origin"; return 1; }
            cmd=(python3 "$BENCH/slow_origin.py") ;;
    *)      log "SLOW_ORIGIN is rust or python"; return 1 ;;
  esac
  start_fg "$1" "$2" TERM tcp nice -n "$CANDIDATE_NICE" "${cmd[@]}" --port "$2" --delay "$3" --mtime "$BIG_MTIME"
}

declare -A ADMIN=()
start_strangler() { # name port toml workers
  local name=$1 port=$2 toml=$3 workers=$4 admin=$(( $2 + 100 )) dir=$RUN/$1
  [[ -x $STRANGLER_BIN ]] || { log "$STRANGLER_BIN missing (cargo build --release)"; return 1; }
  port_free "$admin" || { log "port $admin busy; skipping $name"; return 1; }
  mkdir -p "$dir"; rm -f "$dir"/strangler.db*
  ADMIN[$name]=$admin
  start_fg "$name" "$port" TERM http env -C "$dir" BENCH_PORT="$port" BENCH_ADMIN_PORT="$admin" \
    TOKIO_WORKER_THREADS="$workers" "$STRANGLER_BIN" run -c "$CONF/$toml"
}

start_target() {
  local t=$1
  case $t in
    backend)      start_nginx backend 18080 "$CONF/nginx-backend.conf" ;;
    backend2)     start_nginx backend2 18081 "$CONF/nginx-backend2.conf" ;;
    slow)         start_slow slow 18082 1 ;;
    hang)         start_slow hang 18083 never ;;
    direct)       ROOTPID[direct]=${ROOTPID[backend]} ;;
    nginx)        start_nginx nginx 18100 "$CONF/nginx-proxy.conf" ;;
    nginx-mirror) start_nginx nginx-mirror 18101 "$CONF/nginx-proxy-mirror.conf" ;;
    nginx-2w)     start_nginx nginx-2w 18102 "$CONF/nginx-proxy-2w.conf" ;;
    nginx-mirror-slow) start_nginx nginx-mirror-slow 18103 "$CONF/nginx-proxy-mirror-slow.conf" ;;
    haproxy)      have haproxy && start_fg haproxy 18200 TERM http haproxy -db -f "$CONF/haproxy.cfg" ;;
    strangler)    start_strangler "$t" "${PORT[$t]}" strangler-pass.toml 1 ;;
    strangler-2w) start_strangler "$t" "${PORT[$t]}" strangler-pass.toml 2 ;;
    strangler-canary) start_strangler "$t" "${PORT[$t]}" strangler-canary.toml 1 ;;
    strangler-shadow) start_strangler "$t" "${PORT[$t]}" strangler-shadow.toml 1 ;;
    strangler-shadow-2w) start_strangler "$t" "${PORT[$t]}" strangler-shadow.toml 2 ;;
    strangler-shadow-slow) start_strangler "$t" "${PORT[$t]}" strangler-shadow-slow.toml 1 ;;
    strangler-shadow-hang) start_strangler "$t" "${PORT[$t]}" strangler-shadow-hang.toml 1 ;;
    strangler-side-slow) start_strangler "$t" "${PORT[$t]}" strangler-pass.toml 1 ;;
    "$PUT_NAME")  start_fg "$PUT_NAME" "$PUT_PORT" TERM http bash -c "$PUT_CMD" ;;
    *) log "unknown target $t"; return 1 ;;
  esac
}

# origin nginx counters: "accepts requests" (stub_status); used to check upstream keep-alive
origin_counts() {
  local s
  s=$(curl -s --max-time 2 http://127.0.0.1:18080/__status | awk 'NR==3 {print $1, $3}') || true
  echo "${s:-0 0}"
}

# the pids of a process and all its descendants
tree_pids() {
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v root="$1" '
    { pid=$1; line=$0; sub(/^.*\) /, "", line); split(line, f, " "); ppid[pid]=f[2] }
    END { want[root]=1; ch=1
          while (ch) { ch=0; for (p in ppid) if (!(p in want) && (ppid[p] in want)) { want[p]=1; ch=1 } }
          for (p in want) if (p in ppid) print p }'
}

# CPU time (clock ticks, utime+stime, all threads) of a pid and all its descendants
tree_ticks() {
  # (cat fails when a process exits between the glob and the read: ignore, it is not ours)
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v root="$1" '
    { pid=$1; line=$0; sub(/^.*\) /, "", line); split(line, f, " ");
      ppid[pid]=f[2]; t[pid]=f[12]+f[13] }
    END { want[root]=1; ch=1
          while (ch) { ch=0; for (p in ppid) if (!(p in want) && (ppid[p] in want)) { want[p]=1; ch=1 } }
          s=0; for (p in want) s+=t[p]; print s }'
}

# peak RSS (VmHWM, KiB) summed over a process tree, and the current RSS (VmRSS)
tree_rss() {
  local p hwm=0 rss=0 a b
  for p in $(tree_pids "$1"); do
    a=$(awk '/^VmHWM:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
    b=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
    hwm=$(( hwm + ${a:-0} )); rss=$(( rss + ${b:-0} ))
  done
  echo "$hwm $rss"
}

check_target() { # status 200 and exact body sizes for / (100 B) and /big (16384 B)
  local t=$1 port=$2 p want got
  for p in / /big; do
    [[ $p == / ]] && want=100 || want=16384
    got=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' --max-time 5 "http://127.0.0.1:$port$p" || true)
    if [[ $got != "200 $want" ]]; then log "$t: GET $p -> '$got' (want '200 $want')"; return 1; fi
  done
}

# PACE_LOAD: sets PACE_MS for one round and scenario so that nginx is offered PACE_LOAD of the
# req/s it serves closed-loop right now. A connection's cycle is the pause plus the answer's
# time plus wrk's own; a second, paced calibration run measures that overhead and the pause is
# shortened by it. Both calibration runs go to capacity.tsv, not to the table.
set_pace() { # rep path conns
  local rep=$1 path=$2 c=$3 cal rps paced_rps
  cal="$OUT/r${rep}_capacity_${path//\//_}_c${c}"
  wrk -t"$WRK_THREADS" -c"$c" -d"$DUR" "http://127.0.0.1:${PORT[nginx]}$path" > "$cal.txt" 2>&1 || true
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$cal.txt")
  PACE_MS=$(awk -v c="$c" -v r="${rps:-0}" -v f="$PACE_LOAD" \
    'BEGIN { if (r > 0) printf "%.3f", c * 1000 / (f * r); else print 4 }')
  export PACE_MS
  wrk -t"$WRK_THREADS" -c"$c" -d"$DUR" "${WRK_SCRIPT[@]}" "http://127.0.0.1:${PORT[nginx]}$path" \
    > "$cal-paced.txt" 2>&1 || true
  paced_rps=$(awk '/^Requests\/sec:/ {print $2}' "$cal-paced.txt")
  PACE_MS=$(awk -v c="$c" -v p="$PACE_MS" -v a="${paced_rps:-0}" \
    'BEGIN { if (a > 0) { o = c * 1000 / a - p; q = p - o; printf "%.3f", (q > 0 ? q : 0) } else print p }')
  echo -e "$rep\t$path\t$c\t${rps:-0}\t${paced_rps:-0}\t$PACE_MS" >> "$OUT/capacity.tsv"
}

# ---------------------------------------------------------------------------------- main
have wrk || { echo "wrk missing: apt-get install -y nginx haproxy wrk" >&2; exit 1; }
have nginx || { echo "nginx missing: apt-get install -y nginx haproxy wrk" >&2; exit 1; }
umask 022                           # nginx's worker (user nobody) must read the prefixes
mkdir -p "$RUN" "$OUT"
chmod 755 "$STATE" "$RUN" 2>/dev/null || true
trap 'stop_all' EXIT
trap 'exit 130' INT TERM
stop_all    # anything left by an earlier, interrupted run (pids it registered itself)

if [[ " $TARGETS " == *" strangler"* && -z ${NO_BUILD:-} ]]; then
  log "cargo build --release (strangler)"
  (cd "$REPO" && { cargo build --release --locked --offline --bin strangler --example slow_origin 2>/dev/null \
      || cargo build --release --locked --bin strangler --example slow_origin; } > "$RUN/build-strangler.log" 2>&1) \
    || { log "strangler failed to build: see $RUN/build-strangler.log"; exit 1; }
fi

if [[ -n ${PUT_CMD:-} ]]; then PORT[$PUT_NAME]=$PUT_PORT; TARGETS="$TARGETS $PUT_NAME"; fi

start_target backend  || { log "backend failed"; exit 1; }
start_target backend2 || { log "backend2 failed"; exit 1; }
if [[ $TARGETS == *-slow* ]]; then start_target slow || log "slow origin failed"; fi
if [[ $TARGETS == *-hang* ]]; then start_target hang || log "never-answering origin failed"; fi
ACTIVE=()
for t in $TARGETS; do
  if start_target "$t" && check_target "$t" "${PORT[$t]}"; then ACTIVE+=("$t")
  else log "target $t unavailable; left out of the matrix"; echo "$t" >> "$OUT/skipped"; fi
done
log "active targets: ${ACTIVE[*]}"
if [[ -n $PACE_LOAD && " ${ACTIVE[*]} " != *" nginx "* ]]; then
  log "PACE_LOAD needs the nginx target (its closed-loop req/s sets the pace)"; exit 1
fi

{
  echo "date: $(date -u +%FT%TZ)"
  echo "nproc: $(nproc)   kernel: $(uname -r)   cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "loadavg-at-start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "wrk: -t$WRK_THREADS -d$DUR --latency; conns: $CONNS; paths: $PATHS; reps: $REPS${PACE_MS:+; paced: $PACE_MS ms wait after each answer}${PACE_LOAD:+; paced: load $PACE_LOAD of nginx closed-loop req/s, measured before each round and scenario}"
  echo "nginx: $(nginx -v 2>&1 | sed 's/.*: //')  haproxy: $(haproxy -v 2>/dev/null | head -1 | awk '{print $3}')"
  echo "strangler: $(cd "$REPO" && git describe --always --dirty 2>/dev/null || echo '?')  $STRANGLER_BIN"
  echo "put: ${PUT_CMD:-none}   slow/never candidate: $SLOW_ORIGIN"
} > "$OUT/meta.txt"

# warm-up: fill connection pools, page in code (not recorded)
for t in "${ACTIVE[@]}"; do
  wrk -t1 -c64 -d1s "http://127.0.0.1:${PORT[$t]}/" > /dev/null 2>&1 || true
done

TICK=$(getconf CLK_TCK)
echo -e "rep\tpath\tconns\ttarget\tcpu_ticks\tclk_tck\torigin_conns\torigin_reqs\traw\trss_kib" > "$OUT/runs.tsv"
[[ -z $PACE_LOAD ]] || echo -e "rep\tpath\tconns\tnginx_rps\tfirst_paced_rps\tpace_ms" > "$OUT/capacity.tsv"
n=${#ACTIVE[@]}
for rep in $(seq "$REPS"); do
  for path in $PATHS; do
    for c in $CONNS; do
      if [[ -n $PACE_LOAD ]]; then set_pace "$rep" "$path" "$c"; fi
      # interleave: every target once per (round, scenario); start position rotates per round
      for i in $(seq 0 $((n - 1))); do
        t=${ACTIVE[$(( (i + rep - 1) % n ))]}
        raw="$OUT/r${rep}_${t}_${path//\//_}_c${c}.txt"
        read -r a0 r0 < <(origin_counts)
        before=$(tree_ticks "${ROOTPID[$t]}")
        side=
        if [[ $t == strangler-side-slow ]]; then
          # the 1 s candidate's traffic without strangler sending it: a second wrk, as many
          # connections as shadow.max_in_flight, started early enough to be in its steady state
          wrk -t1 -c1024 -d"$(( ${DUR%s} + 3 ))s" --timeout 5s "http://127.0.0.1:${PORT[slow]}$path" \
            > "${raw%.txt}.side.txt" 2>&1 &
          side=$!
          sleep 1.5
        fi
        wrk -t"$WRK_THREADS" -c"$c" -d"$DUR" --latency "${WRK_SCRIPT[@]}" "http://127.0.0.1:${PORT[$t]}$path" > "$raw" 2>&1 || true
        if [[ -n $side ]]; then wait "$side" || true; fi
        after=$(tree_ticks "${ROOTPID[$t]}")
        read -r a1 r1 < <(origin_counts)
        read -r _ rss_now < <(tree_rss "${ROOTPID[$t]}")   # resident memory right after the run
        # minus the status request itself (1 connection, 1 request)
        echo -e "$rep\t$path\t$c\t$t\t$((after - before))\t$TICK\t$((a1 - a0 - 1))\t$((r1 - r0 - 1))\t$raw\t$rss_now" >> "$OUT/runs.tsv"
      done
      log "round $rep/$REPS path $path c$c done"
    done
  done
done

# peak RSS of every target over all its runs, and strangler's own counters
echo -e "target\tpeak_rss_kib\trss_kib" > "$OUT/rss.tsv"
for t in "${ACTIVE[@]}"; do
  read -r hwm rss < <(tree_rss "${ROOTPID[$t]}")
  echo -e "$t\t$hwm\t$rss" >> "$OUT/rss.tsv"
  if [[ -n ${ADMIN[$t]:-} ]]; then
    curl -s --max-time 5 "http://127.0.0.1:${ADMIN[$t]}/metrics" > "$OUT/metrics-$t.txt" || true
  fi
done

stop_all
python3 "$BENCH/report.py" "$OUT" | tee "$OUT/table.md"
log "raw wrk output, runs.tsv, rss.tsv and strangler metrics in $OUT"
