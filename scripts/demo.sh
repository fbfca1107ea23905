#!/usr/bin/env bash
# make demo: an end-to-end scenario of everything mtipc has so far, readable
# by a newcomer. Real processes in three languages wait on one domain's
# notification semaphore; posts wake exactly as many as they should.
set -euo pipefail
cd "$(dirname "$0")/.."

MTIPC=target/debug/mtipc
PY=.venv/bin/python
WORK=$(mktemp -d /tmp/mtipc-demo.XXXXXX)
D=$WORK/domain
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

bold=$'\033[1m'; off=$'\033[0m'
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$off"; }
run() { printf '$ %s\n' "$*"; "$@"; }

# A process is blocked in the semaphore when the kernel shows it sleeping in
# a futex wait.
blocked() { grep -q futex "/proc/$1/wchan" 2>/dev/null; }
wait_blocked() {
  for _ in $(seq 200); do
    local all=1
    for p in "$@"; do blocked "$p" || all=0; done
    [ $all = 1 ] && return 0
    sleep 0.05
  done
  echo "demo: waiters did not block in time" >&2; exit 1
}
alive() { kill -0 "$1" 2>/dev/null && [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]; }
count_alive() { local n=0; for p in "$@"; do alive "$p" && n=$((n+1)); done; echo $n; }


step "1. Open a fresh domain: the directory is created owner-only, with a layout version and the semaphore file"
run "$MTIPC" --domain "$D" info
run ls -l "$D"
printf '$ stat -c %%A %s\n' "$D"; stat -c %A "$D"

step "2. Five processes wait on the domain's notification semaphore: two mtipc CLIs, two Python, one C program"
start() { "$@" > >(sed -u "s/^/   [waiter] /") 2>&1 & PIDS+=($!); }
start "$MTIPC" --domain "$D" sem wait
start "$MTIPC" --domain "$D" sem wait
start "$PY" -c "import mtipc, os, sys
with mtipc.Domain(sys.argv[1]) as d:
    d.sem_wait()
    print(f'woken (Python waiter, pid {os.getpid()})', flush=True)" "$D"
start "$PY" -c "import mtipc, os, sys
with mtipc.Domain(sys.argv[1]) as d:
    d.sem_wait()
    print(f'woken (Python waiter, pid {os.getpid()})', flush=True)" "$D"
start target/c/c_waiter "$D"
WAITERS=("${PIDS[@]}")
wait_blocked "${WAITERS[@]}"
echo "all $(count_alive "${WAITERS[@]}") waiters are blocked in futex_wait (pids ${WAITERS[*]})"
run "$MTIPC" --domain "$D" sem value

step "3. post 3: exactly three of the five wake"
run "$MTIPC" --domain "$D" sem post 3
sleep 0.5
left=$(count_alive "${WAITERS[@]}")
echo "still waiting: $left (expected 2)"
[ "$left" = 2 ] || { echo "demo: wrong number woke" >&2; exit 1; }
run "$MTIPC" --domain "$D" sem value

step "4. kill -9 one of the two still waiting: it takes nothing with it; post 1 wakes the survivor"
survivors=(); for p in "${WAITERS[@]}"; do alive "$p" && survivors+=("$p"); done
run kill -9 "${survivors[0]}"
wait "${survivors[0]}" 2>/dev/null || true   # reap it quietly
run "$MTIPC" --domain "$D" sem post 1
sleep 0.5
left=$(count_alive "${WAITERS[@]}")
echo "still waiting: $left (expected 0)"
[ "$left" = 0 ] || { echo "demo: survivor did not wake" >&2; exit 1; }
run "$MTIPC" --domain "$D" sem value

step "5. Posts with nobody waiting are kept; reset clears them"
run "$MTIPC" --domain "$D" sem post 2
run "$MTIPC" --domain "$D" info --json
run "$MTIPC" --domain "$D" sem wait --timeout-ms 100
run "$MTIPC" --domain "$D" sem reset
printf '$ %s\n' "$MTIPC --domain $D sem wait --timeout-ms 200"
"$MTIPC" --domain "$D" sem wait --timeout-ms 200 || echo "(exit status $?: timed out, as it should)"

step "6. Domains mtipc refuses, each with a clear error"
refuse() { printf '$ %s\n' "$*"; "$@" || true; }
ln -s "$D" "$WORK/link"
refuse "$MTIPC" --domain "$WORK/link" info
touch "$WORK/file"
refuse "$MTIPC" --domain "$WORK/file" info
mkdir -m 0777 "$WORK/open"; chmod 0777 "$WORK/open"
refuse "$MTIPC" --domain "$WORK/open" info
mkdir -m 0700 "$WORK/future"; printf 'mtipc domain\nlayout 9\n' > "$WORK/future/layout"; chmod 600 "$WORK/future/layout"
refuse "$MTIPC" --domain "$WORK/future" info
mkdir -m 0700 "$WORK/broken"; printf 'garbage' > "$WORK/broken/layout"; chmod 600 "$WORK/broken/layout"
refuse "$MTIPC" --domain "$WORK/broken" info
truncate -s 10 "$D/notify.sem"
refuse "$MTIPC" --domain "$D" info

# ---------------------------------------------------------------------------
# Discovery and secure attach (issue 3)
A=$WORK/attach-domain
MTIPCD=target/debug/mtipcd
listed() { "$MTIPC" --domain "$A" ls --json | grep -o "\"id\":\"$1\"" >/dev/null; }
wait_listed() {
  for _ in $(seq 200); do
    local all=1
    for t in "$@"; do listed "$t" || all=0; done
    [ $all = 1 ] && return 0
    sleep 0.05
  done
  echo "demo: $* not advertised in time" >&2; exit 1
}

step "7. Start the domain's daemon, mtipcd: it advertises itself and runs the relay"
"$MTIPCD" --domain "$A" 2> "$WORK/mtipcd.log" & DAEMON=$!; PIDS+=($DAEMON)
wait_listed @mtipcd
echo "mtipcd running (pid $DAEMON); its log:"
sed 's/^/   [mtipcd] /' "$WORK/mtipcd.log"

step "8. Three tenants advertise themselves: one in C, one in C++, one in Python"
tenant() { "$@" > >(sed -u "s/^/   [tenant] /") 2>&1 & PIDS+=($!); }
tenant target/c/c_tenant "$A" c-tenant
tenant target/c/cpp_tenant "$A" cpp-tenant
tenant "$PY" -u examples/py_tenant.py "$A" py-tenant
wait_listed c-tenant cpp-tenant py-tenant
sleep 0.2
run "$MTIPC" --domain "$A" ls
ls "$A/adverts" | sed 's/^/   adverts\//'

step "9. Attach to each tenant and exchange a message (TLS 1.3 through the relay)"
for t in c-tenant cpp-tenant py-tenant; do
  run "$MTIPC" --domain "$A" attach "$t" --send "hello $t"
  sleep 0.1
done
echo "semaphore after the rounds: $("$MTIPC" --domain "$A" sem value) (every round ends at zero)"

step "10. A longer conversation: each line of stdin is one message"
printf '$ printf "one\\ntwo\\nthree\\n" | %s --domain %s attach py-tenant\n' "$MTIPC" "$A"
printf 'one\ntwo\nthree\n' | "$MTIPC" --domain "$A" attach py-tenant

step "11. The time window: the relay opens the path at the start time and closes it when the duration ends"
echo "start in 500 ms: attach returns only once the window opens"
run "$MTIPC" --domain "$A" attach c-tenant --start-in-ms 500 --send "on time"
echo "duration 1000 ms: a message after the window has closed gets MT_ERR_CLOSED"
printf '$ (echo first; sleep 0.4; echo second; sleep 1; echo too-late) | %s --domain %s attach c-tenant --duration-ms 1000\n' "$MTIPC" "$A"
(echo first; sleep 0.4; echo second; sleep 1; echo too-late) \
  | "$MTIPC" --domain "$A" attach c-tenant --duration-ms 1000 || echo "(exit status $?: the connection closed when its duration ended)"

step "12. Faults: a missing tenant, a tenant killed with kill -9, no daemon"
refuse "$MTIPC" --domain "$A" attach nobody --send x
CPID=$(pgrep -f "target/c/c_tenant $A c-tenant" | head -1)
run kill -9 "$CPID"
wait "$CPID" 2>/dev/null || true
run "$MTIPC" --domain "$A" ls
refuse "$MTIPC" --domain "$A" attach c-tenant --send x
run kill -TERM "$DAEMON"
wait "$DAEMON" 2>/dev/null || true
echo "mtipcd stopped; the end of its log:"
tail -n 3 "$WORK/mtipcd.log" | sed 's/^/   [mtipcd] /'
refuse "$MTIPC" --domain "$A" attach py-tenant --send x

step "13. The other tenants stop on SIGTERM and withdraw their advertisements"
for t in cpp-tenant py-tenant; do
  p=$(pgrep -f "$t" | head -1)
  kill -TERM "$p"; wait "$p" 2>/dev/null || true
done
sleep 0.2
run ls -A "$A/adverts"

# ---------------------------------------------------------------------------
# Sessions, request dispatch, worker failover, shared closures (issue 4)
S=$WORK/session-domain
worker() { local tag=$1; shift; "$@" > "$WORK/$tag.log" 2>&1 & PIDS+=($!); }

step "14. A session table in shared memory and two worker groups: C workers (group 0), Python workers (group 1)"
echo "The connection manager (examples/py_manager.py) creates the table; workers wait for it, then register."
worker c-worker-1 target/c/c_worker "$S" calls 0
C1=$!
worker c-worker-2 target/c/c_worker "$S" calls 0
C2=$!
worker py-worker-1 "$PY" -u examples/py_worker.py "$S" calls 1 --delay 0.002
P1=$!
worker py-worker-2 "$PY" -u examples/py_worker.py "$S" calls 1 --delay 0.002
P2=$!
echo "workers: C pids $C1 $C2 (group 0), Python pids $P1 $P2 (group 1)"
run "$PY" -u examples/py_manager.py "$S" calls --sessions 4 --requests 24 --keep --wait-workers 2 \
  | sed -u 's/^/   [manager] /'
echo "each session's requests went to one worker of its group (sticky sessions), each new session to a worker"
echo "that was idle, so the two sessions of a group are on its two workers; one line per request in the workers' logs:"
for f in c-worker-1 c-worker-2 py-worker-1 py-worker-2; do
  printf '   %-12s %3d requests served %s\n' "$f" "$(grep -c -- ' -> ' "$WORK/$f.log" || true)" \
    "$(grep -m1 -- ' -> ' "$WORK/$f.log" | sed 's/^/(e.g. /; s/$/)/')"
done
run "$MTIPC" --domain "$S" sessions

step "15. Under load, kill -9 a C worker: its sessions move to the other C worker, and no request is lost"
"$PY" -u examples/py_manager.py "$S" calls --sessions 6 --requests 600 --in-flight 6 --pace 0.002 \
  > "$WORK/manager.log" 2>&1 & MANAGER=$!
sleep 0.6
VICTIM=$C1
grep -q "pid $C1" "$WORK/manager.log" || VICTIM=$C2
run kill -9 "$VICTIM"
wait "$VICTIM" 2>/dev/null || true
wait "$MANAGER" || { echo "demo: the manager found lost or wrong answers" >&2; cat "$WORK/manager.log"; exit 1; }
grep -E "MOVED|^summary" "$WORK/manager.log" | sed 's/^/   [manager] /'

step "16. mtipc sessions after the kill: the dead worker was reaped, every slot is free, nothing in flight"
run "$MTIPC" --domain "$S" sessions

step "17. Shared closures: an immutable value other processes map read-only, with no copy"
run "$PY" examples/py_closure.py "$S"
run target/c/c_closure "$S"
echo "A reader in another process holds the current version while a new one is published:"
"$PY" -u -c "import mtipc, sys, time
with mtipc.Domain(sys.argv[1]) as d, mtipc.open_closure(d, 'routing') as c:
    print(f'reader {__import__(\"os\").getpid()}: holding version {c.version}: {dict(c.value)}', flush=True)
    time.sleep(600)" "$S" > >(sed -u 's/^/   [reader] /') 2>&1 & READER=$!; PIDS+=($READER)
for _ in $(seq 100); do "$MTIPC" --domain "$S" sessions --json | grep -q '"readers":1' && break; sleep 0.05; done
run "$PY" -c "import mtipc, sys
with mtipc.Domain(sys.argv[1]) as d:
    print('published version', mtipc.publish_closure(d, 'routing', {'queue': 'support', 'weight': 5}))" "$S"
run ls "$S/closures/routing"
run "$MTIPC" --domain "$S" sessions
echo "The reader lets go (killed with -9: the kernel drops its lock); the next publish frees the old version:"
run kill -9 "$READER"
wait "$READER" 2>/dev/null || true
run "$PY" -c "import mtipc, sys
with mtipc.Domain(sys.argv[1]) as d:
    print('published version', mtipc.publish_closure(d, 'routing', {'queue': 'sales', 'weight': 1}))" "$S"
run ls "$S/closures/routing"

echo "The workers stop on SIGTERM: each unregisters, handing what it holds to its group."
for p in $C1 $C2 $P1 $P2; do kill -TERM "$p" 2>/dev/null || true; done
for p in $C1 $C2 $P1 $P2; do wait "$p" 2>/dev/null || true; done
tail -q -n 1 "$WORK"/c-worker-2.log "$WORK"/py-worker-*.log | sed 's/^/   [worker] /'

step "18. A gateway volume: eight instances (C and Python) upload and download files, each transfer under a permit"
V=$WORK/gateway
mkdir -m 0755 "$V"
run "$MTIPC" --domain "$S" volume add gw "$V" --max-transfers 1 --lease-ms 2000
run "$MTIPC" --domain "$S" volume ls
echo "One transfer at a time (cap 1), so every request queues. c1 floods with 10 threads; the others ask with one."
GW=()
gw() { "$@" > >(sed -u "s/^/   [gateway] /") 2>&1 & GW+=($!); }
gw target/c/c_gateway "$S" gw c1 3 10
for n in 2 3 4; do gw target/c/c_gateway "$S" gw "c$n" 3; done
for n in 1 2 3 4; do gw "$PY" examples/py_gateway.py "$S" gw "p$n" 3; done
sleep 1.5
echo "Half way: the holder, and the queue in grant order (round robin over instances, FIFO within one):"
run "$MTIPC" --domain "$S" permits gw
for p in "${GW[@]}"; do wait "$p"; done
echo "c1 queued ten times more requests than anyone, and was granted about as many as each of the others (grants after the 3 s are not counted)."

step "19. kill -9 a holder in the middle of a put: its permit is reclaimed by the next process that looks, and no half-written file appears"
"$PY" -u examples/py_gateway.py "$S" gw p9 0 --hold --size $((512 << 20)) > "$WORK/p9.log" 2>&1 & P9=$!; PIDS+=($P9)
for _ in $(seq 200); do grep -q putting "$WORK/p9.log" && break; sleep 0.05; done
sed 's/^/   [gateway] /' "$WORK/p9.log"
sleep 0.1
run kill -9 "$P9"
wait "$P9" 2>/dev/null || true
echo "What the volume holds for p9: the final name is absent, only the dead process's temporary copy is there:"
run ls -a "$V/p9"
run "$MTIPC" --domain "$S" permits gw
echo "The same path, at once, for another instance:"
run "$PY" -c "import mtipc, sys
with mtipc.Domain(sys.argv[1]) as d, d.permit('gw', 'p9/big.dat', 'write', timeout=0) as p:
    print(f'granted token {p.token} without waiting')" "$S"

step "20. The same on etcd: a volume two \"hosts\" (two domains) mount, its permits kept in a real etcd"
ports=$("$PY" -c "import socket
s=[socket.socket() for _ in range(2)]
[x.bind(('127.0.0.1', 0)) for x in s]
print(*[x.getsockname()[1] for x in s])")
read -r CPORT PPORT <<<"$ports"
ETCD_URL=http://127.0.0.1:$CPORT
etcd --name demo --data-dir "$WORK/etcd" \
  --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
  --listen-peer-urls "http://127.0.0.1:$PPORT" --initial-advertise-peer-urls "http://127.0.0.1:$PPORT" \
  --initial-cluster "demo=http://127.0.0.1:$PPORT" \
  --heartbeat-interval 50 --election-timeout 500 > "$WORK/etcd.log" 2>&1 & ETCD=$!; PIDS+=($ETCD)
health() { "$PY" -c "import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1] + '/health', timeout=1).read().decode())" "$ETCD_URL" 2>/dev/null; }
for _ in $(seq 100); do health >/dev/null && break; sleep 0.1; done
echo "$(health) (etcd $(etcd --version | head -1 | awk '{print $3}') on $ETCD_URL)"
S2=$WORK/second-host
EV=$WORK/shared-volume
mkdir -m 0755 "$EV"
run "$MTIPC" --domain "$S" volume add gwe "$EV" --max-transfers 1 --lease-ms 1000 --etcd "$ETCD_URL"
run "$MTIPC" --domain "$S2" volume add gwe "$EV" --max-transfers 1 --lease-ms 1000 --etcd "$ETCD_URL"
echo "Two C instances on the first host (one flooding), two Python ones on the second, 3 s:"
GW=()
gw target/c/c_gateway "$S" gwe c1 3 10
gw target/c/c_gateway "$S" gwe c2 3
gw "$PY" examples/py_gateway.py "$S2" gwe p1 3
gw "$PY" examples/py_gateway.py "$S2" gwe p2 3
sleep 1.5
run "$MTIPC" --domain "$S2" permits gwe
for p in "${GW[@]}"; do wait "$p"; done
echo "A holder on the second host is killed with -9 in the middle of a put; its etcd lease (1 s) runs out and the first host is granted the path:"
"$PY" -u examples/py_gateway.py "$S2" gwe p9 0 --hold --size $((256 << 20)) > "$WORK/p9e.log" 2>&1 & P9=$!; PIDS+=($P9)
for _ in $(seq 200); do grep -q putting "$WORK/p9e.log" && break; sleep 0.05; done
sed 's/^/   [gateway] /' "$WORK/p9e.log"
sleep 0.1
run kill -9 "$P9"
wait "$P9" 2>/dev/null || true
run "$PY" -c "import mtipc, sys, time
with mtipc.Domain(sys.argv[1]) as d:
    t = time.monotonic()
    with d.permit('gwe', 'p9/big.dat', 'write', timeout=10) as p:
        print(f'granted token {p.token} after {time.monotonic() - t:.2f} s')" "$S"
run ls -a "$EV/p9"
run "$MTIPC" --domain "$S" permits gwe

kill "$ETCD" 2>/dev/null; wait "$ETCD" 2>/dev/null || true

step "21. A node of twelve processes in three tenant groups (acme, globex, initech), in C, C++ and Python, checked before anything starts"
HA=target/debug/mtipc-ha
N=$WORK/node-domain
ROOT=$(pwd)
app() { # NAME LANGUAGE: the command of an example application using the HA hooks
  case $2 in
    c) echo "[\"$ROOT/target/c/c_ha_app\", \"$1\", \"150\"]" ;;
    cpp) echo "[\"$ROOT/target/c/cpp_ha_app\", \"$1\", \"150\"]" ;;
    py) echo "[\"$ROOT/$PY\", \"-u\", \"$ROOT/examples/py_ha_app.py\", \"$1\", \"150\"]" ;;
  esac
}
proc() { # NAME LANGUAGE GROUP DEPENDS PRIORITY
  printf '[[process]]\nname = "%s"\ncommand = %s\nready = "notify"\nwatchdog_ms = 2000\nmonitor_ms = 200\nrestart_backoff_ms = 50\n' "$1" "$(app "$1" "$2")"
  [ -n "$3" ] && printf 'tenant_group = "%s"\n' "$3"
  [ -n "$4" ] && printf 'depends_on = [%s]\n' "$4"
  [ -n "${5:-}" ] && printf 'priority = %s\n' "$5"
  printf '\n'
}
{
  printf '[node]\nname = "demo"\ndomain = "%s"\n\n' "$N"
  proc db c "" ""
  proc bus py "" '"db"'
  printf '[[process]]\nname = "metrics"\ncommand = ["/bin/sh", "-c", "echo metrics up; exec sleep 100000"]\npriority = 5\n\n'
  proc acme-gw cpp acme '"bus"' 1
  proc acme-ivr c acme '"acme-gw"'
  proc acme-rec py acme '"acme-gw"'
  proc globex-gw c globex '"bus"' 2
  proc globex-ivr py globex '"globex-gw"'
  proc globex-rec cpp globex '"globex-gw"'
  proc initech-gw py initech '"bus"' 3
  proc initech-ivr cpp initech '"initech-gw"'
  proc initech-rec c initech '"initech-gw"'
} > "$WORK/node.toml"
run "$HA" check "$WORK/node.toml"

step "22. mtipc-ha up: the Master Watcher starts the Master, which starts the Spawner, the Monitor and the Server; the processes start in dependency order, each once the ones it depends on said ready"
"$HA" up "$WORK/node.toml" > "$WORK/ha.log" 2>&1 & NODE=$!; PIDS+=($NODE)
ha_ready() { # every process ready (or up) and all five roles running
  "$MTIPC" --domain "$N" ha status --json 2>/dev/null | "$PY" -c "import json, sys
s = json.load(sys.stdin)
ok = all(p['state'] in ('ready', 'up') for p in s['processes']) and all(s['roles'][r] for r in ('server', 'monitor', 'spawner', 'master', 'watcher'))
sys.exit(0 if ok else 1)" 2>/dev/null
}
wait_ha() { for _ in $(seq 300); do ha_ready && return 0; sleep 0.05; done; echo "demo: the node did not settle" >&2; cat "$WORK/ha.log" >&2; exit 1; }
wait_ha
run "$MTIPC" --domain "$N" ha status
echo "The order they became ready in (from mtipc-ha's log):"
grep -o '[a-z-]*: starting -> ready' "$WORK/ha.log" | sed 's/: starting -> ready//' | tr '\n' ' ' | sed 's/^/   /'; echo
run "$MTIPC" --domain "$N" ha log acme-gw --lines 3

pid_of() { "$MTIPC" --domain "$N" ha status --json | "$PY" -c "import json, sys
s = json.load(sys.stdin)
print(next(p['pid'] for p in s['processes'] if p['name'] == sys.argv[1]))" "$1"; }
step "23. kill -9 an application (acme-ivr): its end is reaped at once and it is started again after its backoff"
IVR=$(pid_of acme-ivr)
run kill -9 "$IVR"
sleep 0.3; wait_ha
echo "acme-ivr: pid $IVR before, $(pid_of acme-ivr) now:"
"$MTIPC" --domain "$N" ha status | grep -E 'NAME|acme-ivr'

step "24. kill -9 each of the five roles in turn: its watcher starts it again and it takes up the running processes; no application restarts"
BEFORE=$("$MTIPC" --domain "$N" ha status --json | "$PY" -c "import json, sys; print(sorted((p['name'], p['pid']) for p in json.load(sys.stdin)['processes']))")
for role in spawner monitor server master watcher; do
  old=$(cut -d: -f1 "$N/ha/role-$role.lock")
  kill -9 "$old"
  for _ in $(seq 200); do new=$(cut -d: -f1 "$N/ha/role-$role.lock"); [ "$new" != "$old" ] && kill -0 "$new" 2>/dev/null && break; sleep 0.02; done
  printf '   kill -9 %-8s pid %-7s -> started again as pid %s\n' "$role" "$old" "$new"
done
wait_ha
AFTER=$("$MTIPC" --domain "$N" ha status --json | "$PY" -c "import json, sys; print(sorted((p['name'], p['pid']) for p in json.load(sys.stdin)['processes']))")
[ "$BEFORE" = "$AFTER" ] && echo "   every application kept its pid: none was restarted" || { echo "demo: an application was restarted" >&2; exit 1; }
run "$MTIPC" --domain "$N" ha status

step "25. Stop one tenant group (globex) while the others run: its members stop in reverse order"
run "$MTIPC" --domain "$N" ha stop @globex
grep -E 'globex-[a-z]+: (ready|up|starting) -> stopping' "$WORK/ha.log" | sed 's/.*mtipc-ha: /   /; s/ (pid.*//'
run "$MTIPC" --domain "$N" ha start @globex

step "26. SIGTERM to mtipc-ha up: every process stops in reverse dependency order, then the roles; exit status 0"
run kill -TERM "$NODE"
status=0; wait "$NODE" || status=$?
echo "   stop order: $(grep -E ': (ready|up) -> stopping' "$WORK/ha.log" | tail -12 | sed 's/.*mtipc-ha: //; s/: .*//' | paste -sd, | sed 's/,/, /g')"
echo "mtipc-ha up exited with status $status; left running: $(pgrep -f "$WORK/node.toml" | wc -l) processes"

printf '\n%sdemo finished: every step behaved as described.%s\n' "$bold" "$off"
