#!/bin/sh
# Bench tds-ingress with wrk: durable signed webhooks/s and latency, and the
# admin /healthz ceiling of the same binary. Usage:
#   ingress/bench/run.sh BUILD_DIR [SECONDS] [CONNECTIONS]
# Env: HALF=<rate> adds a paced run at that rate; HEALTHZ=0 skips the ceiling;
# IDLE=<n> holds n idle keep-alive connections open during the runs (a server
# that scans every connection pays for them); THREADS, TPC (thread per
# connection) pass through, and so does any TDS_INGRESS_* setting in the
# environment (TDS_INGRESS_POLL=true, TDS_INGRESS_PER_IP_LIMIT=...). Needs wrk
# and /usr/bin/python3 (gen.py); BUILD's tests/bench/bench_sink stands in for
# the processor and writer. With perf (and readable syscall tracepoints) it
# also prints the ingress's system calls and context switches per webhook,
# and with GNU time (/usr/bin/time) wrk's own CPU per webhook.
set -eu
BUILD=${1:?build dir}; SECS=${2:-10}; CONNS=${3:-64}
HERE=$(cd "$(dirname "$0")" && pwd)
W=$(mktemp -d /tmp/tds-ingress-bench.XXXXXX)
base=$((20000 + $(od -An -N2 -tu2 /dev/urandom) % 30000))
HTTP=$base; ADMIN=$((base+1)); PULL=$((base+2)); ACK=$((base+3))
/usr/bin/python3 "$HERE/gen.py" "$W" 100 8000
# The stand-in for the processor and writer: acks every event it takes.
"$BUILD/tests/bench/bench_sink" tcp://127.0.0.1:$PULL tcp://127.0.0.1:$ACK > "$W/sink.log" 2>&1 &
SINK=$!
# TDS_INGRESS_DEDUPE_S=0: the 8000 pre-signed bodies repeat during the run and
# must count as new webhooks (each is still looked up in the window).
TDS_CONFIG=$W/orgs.json TDS_INGRESS_JOURNAL_DIR=$W/journal TDS_INGRESS_DEDUPE_S=0 \
TDS_INGRESS_LISTEN=127.0.0.1:$HTTP TDS_ADMIN_LISTEN=127.0.0.1:$ADMIN TDS_INSTANCE=bench \
TDS_PROCESSOR_CONNECT=tcp://127.0.0.1:$PULL TDS_ACK_CONNECT=tcp://127.0.0.1:$ACK \
TDS_LOG_LEVEL=warn TDS_INGRESS_THREADS=${THREADS:-2} \
TDS_INGRESS_THREAD_PER_CONNECTION=${TPC:-false} "$BUILD/ingress/tds-ingress" 2> "$W/ingress.log" &
ING=$!
sleep 1
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14+$15)/hz }' /proc/${1:-$ING}/stat; }
accepted() { curl -s "http://127.0.0.1:$ADMIN/metrics" | awk '/^tds_ingress_requests_total\{status="200"\}/ {print $2}'; }
IDLER=
if [ -n "${IDLE:-}" ]; then
  /usr/bin/python3 -c '
import socket, sys, time
held = []
for _ in range(int(sys.argv[2])):
    held.append(socket.create_connection(("127.0.0.1", int(sys.argv[1]))))
print("holding %d idle connections" % len(held), flush=True)
time.sleep(3600)' "$HTTP" "$IDLE" &
  IDLER=$!
  sleep 2
fi
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cpus"
c0=$(cpu); s0=$(cpu $SINK); n0=$(accepted)
# With perf and readable syscall tracepoints: the ingress's system calls and
# context switches over the run, per webhook (the kernel is most of its CPU).
PERF=
if command -v perf >/dev/null 2>&1 && perf stat -e raw_syscalls:sys_enter -- true >/dev/null 2>&1; then
  perf stat -x, -o "$W/perf.txt" -p "$ING" -e raw_syscalls:sys_enter,context-switches \
    -e syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendmsg,syscalls:sys_enter_epoll_ctl \
    -e syscalls:sys_enter_write,syscalls:sys_enter_futex -- sleep "$SECS" &
  PERF=$!
fi
echo "== webhooks, max rate ($CONNS connections, ${SECS}s)"
# wrk shares the cores with the ingress: its own CPU is shown too (GNU time).
TIMED=
command -v /usr/bin/time >/dev/null 2>&1 && TIMED="/usr/bin/time -f %U,%S -o $W/wrk.cpu"
REQUESTS=$W/requests.txt $TIMED wrk -t2 -c"$CONNS" -d"${SECS}s" -s "$HERE/webhooks.lua" \
  "http://127.0.0.1:$HTTP" | tail -2
c1=$(cpu); s1=$(cpu $SINK); n1=$(accepted)
awk -v c="$(echo "$c1 - $c0" | bc -l)" -v n="$((n1 - n0))" \
  'BEGIN { printf "ingress cpu: %.2f s for %d webhooks = %.1f us each\n", c, n, c / n * 1e6 }'
awk -v c="$(echo "$s1 - $s0" | bc -l)" -v n="$((n1 - n0))" \
  'BEGIN { printf "sink cpu: %.2f s = %.1f us a webhook\n", c, c / n * 1e6 }'
[ -s "$W/wrk.cpu" ] && awk -F, -v n="$((n1 - n0))" \
  '/^[0-9.]+,[0-9.]+$/ { printf "wrk cpu: %.2f s = %.1f us a webhook\n", $1 + $2, ($1 + $2) / n * 1e6 }' "$W/wrk.cpu"
if [ -n "$PERF" ]; then
  # perf's window is SECS from its start, wrk's starts after it reads the
  # request file: the count covers most, not all, of the run, so it is
  # divided by the responses sent (sendmsg, one per response) in that window.
  wait "$PERF" || true
  awk -F, '$1 ~ /^[0-9]+$/ { v[$3] = $1 } END {
    n = v["syscalls:sys_enter_sendmsg"]; if (!n) exit
    printf "ingress per webhook (perf, %d responses): %.2f system calls (recvfrom %.2f, epoll_ctl %.2f, write %.2f, futex %.2f), %.2f context switches\n",
      n, v["raw_syscalls:sys_enter"] / n, v["syscalls:sys_enter_recvfrom"] / n,
      v["syscalls:sys_enter_epoll_ctl"] / n, v["syscalls:sys_enter_write"] / n,
      v["syscalls:sys_enter_futex"] / n, v["context-switches"] / n }' "$W/perf.txt"
fi
if [ -n "${HALF:-}" ]; then
  echo "== webhooks paced at ${HALF}/s in total ($CONNS connections, ${SECS}s)"
  RATE=$(( HALF / CONNS )) REQUESTS=$W/requests.txt wrk -t2 -c"$CONNS" -d"${SECS}s" \
    -s "$HERE/webhooks.lua" "http://127.0.0.1:$HTTP" | tail -2
fi
curl -s "http://127.0.0.1:$ADMIN/metrics" | grep -E '^tds_ingress_fsync_seconds_bucket|^tds_ingress_(group_commit_size|fsync_seconds)_(sum|count)|^tds_ingress_unacked|^tds_ingress_requests_total\{status="(200|503)"' || true
if [ "${HEALTHZ:-1}" != 0 ]; then
  echo "== admin /healthz ceiling ($CONNS connections)"
  wrk -t2 -c"$CONNS" -d"${SECS}s" --latency "http://127.0.0.1:$ADMIN/healthz" | \
    grep -E 'Requests/sec|50%|99%'
fi
[ -n "$IDLER" ] && kill $IDLER
kill -TERM $ING; wait $ING || true
kill -TERM $SINK; wait $SINK || true
cat "$W/sink.log"
rm -rf "$W"
