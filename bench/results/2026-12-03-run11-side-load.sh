#!/usr/bin/env bash
# Kept with the run 11 results: the side-load control run quoted in BENCHMARKS.md and
# bench/results/2026-12-03-run11.md. Needs nginx, wrk, bc, a release build and examples/slow_origin;
# uses ports 18080, 18082, 18600 and 18700. REPS=6 for the quoted figures.
# Is the client worker's slowdown behind a 1 s candidate strangler's mirroring, or the
# co-located candidate traffic? pass / pass + a second wrk driving the 1 s candidate directly
# with 1024 connections / shadow-slow.
set -u
B=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd); REPO=$(cd "$B/.." && pwd)
S=${BENCH_STATE:-/tmp/strangler-side-load}; BIN=$REPO/target/release/strangler
C=${C:-64}; P=${P:-/big}
rm -rf $S/o $S/s; mkdir -p $S;  mkdir -p $S/o/www $S/o/tmp $S/s; chmod 755 $S $S/o $S/o/www
head -c 16384 /dev/zero | tr '\0' 'b' > $S/o/www/big.bin && touch -d @1767225600 $S/o/www/big.bin
nginx -p $S/o/ -e $S/o/error.log -c $B/conf/nginx-backend.conf; sleep 0.3
"$REPO/target/release/examples/slow_origin" --port 18082 --delay 1 --mtime 1767225600 >/dev/null 2>&1 & SLOW=$!
for rep in $(seq ${REPS:-3}); do for v in pass pass+side shadow-slow; do
  conf=${v%+side}
  rm -f $S/s/strangler.db*
  (cd $S/s && BENCH_PORT=18600 BENCH_ADMIN_PORT=18700 TOKIO_WORKER_THREADS=1 exec $BIN run -c $B/conf/strangler-$conf.toml >$S/s/log 2>&1) & PID=$!
  for i in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:18600/ && break; sleep 0.1; done
  SIDE=
  if [[ $v == *+side ]]; then wrk -t1 -c1024 -d12s --timeout 5s http://127.0.0.1:18082$P > $S/side.txt 2>&1 & SIDE=$!; sleep 1.5; fi
  wrk -t1 -c$C -d2s http://127.0.0.1:18600$P >/dev/null
  W=$(for t in /proc/$PID/task/*; do [[ $(cat $t/comm) == tokio-rt-worker ]] && echo $t; done)
  T0=$(cat $(for t in $W; do echo $t/stat; done) | awk '{s+=$14+$15} END {print s}')
  wrk -t1 -c$C -d5s --latency http://127.0.0.1:18600$P > $S/wrk.txt
  T1=$(cat $(for t in $W; do echo $t/stat; done) | awk '{s+=$14+$15} END {print s}')
  REQ=$(grep -oE '^ +[0-9]+ requests' $S/wrk.txt | awk '{print $1}')
  printf "%-12s req/s %7.0f  p99 %8s  worker cpu/req %5.1f us\n" $v $(grep Requests/sec $S/wrk.txt | awk '{print $2}') $(grep ' 99%' $S/wrk.txt | awk '{print $2}') $(echo "($T1-$T0)*10000/$REQ" | bc -l)
  [[ -n $SIDE ]] && { wait $SIDE; grep -E 'Requests/sec' $S/side.txt | sed 's/^/   side wrk: /'; }
  kill $PID; wait $PID 2>/dev/null
done; done
kill $SLOW; kill $(cat $S/o/nginx.pid)
