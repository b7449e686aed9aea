#!/usr/bin/env bash
# One push to N bus mirrors against the same N over SSH, side by side (issue 18): wall time
# from `push` to the last answer (at the lab points both answer `synced`: an SSH mirror's
# handler and a listener's ack; at the simulated points `accepted`), the master's CPU (user+sys) and peak RSS, and the broker's CPU during the push.
#
#   benches/bus.sh
#   RUNS=3 BUS_LAB_NS="10 20" BUS_SIM_NS="1000 10000" BUS_SSH_SIM_NS="1000" benches/bus.sh
#
# - Lab points (BUS_LAB_NS): examples/bus_lab_serve.rs starts the lab's own RabbitMQ node and N
#   OpenSSH sshd mirrors (handler in wait mode), each also followed by a real
#   `mirrorpush-listen` as the lab account; the same N mirrors are pushed over SSH (the lab's
#   registry) and over the bus (one [bus] registry naming the N listeners).
# - Simulated points (BUS_SIM_NS): a broker only, and examples/busfleet.rs, N simulated bus
#   mirrors in one process (a queue each on the broker, an ack key each; each acks `accepted`).
#   The SSH side of those points (BUS_SSH_SIM_NS) is examples/simfleet.rs, N russh endpoints
#   that answer `accepted` (the fan-out benchmark's fleet), pushed at concurrency N.
# Broker CPU: utime+stime of the broker's process tree (beam.smp and its helpers) from /proc,
# before and after each push. Raw results under target/bench/bus/<time>/.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

RUNS=${RUNS:-3}
read -r -a LAB_NS <<<"${BUS_LAB_NS:-10 20}"
read -r -a SIM_NS <<<"${BUS_SIM_NS:-1000 10000}"
read -r -a SSH_SIM_NS <<<"${BUS_SSH_SIM_NS:-1000}"
bench_build
bench_outdir bus
bench_traps
ulimit -n 65536 2>/dev/null || true
TSV=$OUT/bus.tsv
echo "scen transport n run wall_s user_s sys_s maxrss_kb last_answer_ms broker_cpu_s ok failed rc" >"$TSV"
HZ=$(getconf CLK_TCK)

# tree_ticks PID: utime+stime (and those of waited-for children) of PID and its descendants.
tree_ticks() {
    local root=$1
    ps -e -o pid=,ppid= | awk -v r="$root" '
        { parent[$1] = $2 } END {
            n = 1; tree[r] = 1; changed = 1
            while (changed) { changed = 0
                for (p in parent) if (!(p in tree) && (parent[p] in tree)) { tree[p] = 1; changed = 1 } }
            for (p in tree) print p }' |
        while read -r p; do
            [ -r "/proc/$p/stat" ] && sed 's/.*) //' "/proc/$p/stat" | awk '{ print $12 + $13 + $14 + $15 }'
        done | awk '{ s += $1 } END { print s + 0 }'
}

# push SCEN TRANSPORT N RUN REGISTRY [BROKER_PID]: one timed `mirrorpush push --json`.
push() {
    local scen=$1 transport=$2 n=$3 run=$4 registry=$5 broker=${6:-} base rc=0 b0=0 b1=0 t
    base=$OUT/runs/$scen.$transport.$run
    mkdir -p "$OUT/runs"
    [ -n "$broker" ] && b0=$(tree_ticks "$broker")
    timeout "${BENCH_CMD_TIMEOUT:-900}" "$REL/examples/rusage" "$base.time" -- \
        "$REL/mirrorpush" --registry "$registry" push --json --concurrency "$n" fedora \
        >"$base.out" 2>"$base.err" </dev/null || rc=$?
    [ -n "$broker" ] && b1=$(tree_ticks "$broker")
    t=$(tail -n 1 "$base.time" 2>/dev/null || echo "0 0 0 0")
    local answers
    answers=$(python3 -c '
import json, sys
last = ok = failed = 0
for line in open(sys.argv[1]):
    v = json.loads(line)
    if "summary" in v:
        continue
    last = max(last, v["started_ms"] + v["elapsed_ms"])
    ok += v["ok"]; failed += not v["ok"]
print(last, ok, failed)' "$base.out" 2>/dev/null || echo "0 0 0")
    local broker_s=-
    [ -n "$broker" ] && broker_s=$(awk -v a="$b0" -v b="$b1" -v hz="$HZ" 'BEGIN { printf "%.2f", (b - a) / hz }')
    local a=($answers)
    [ "$run" = warmup ] || echo "$scen $transport $n $run $t ${a[0]} $broker_s ${a[1]} ${a[2]} $rc" >>"$TSV"
}

# A second server beside start_server's: busfleet, stopped by closing its stdin.
start_fleet() {
    local fifo=$OUT/fleet.ctl i
    rm -f "$fifo"
    mkfifo "$fifo"
    "$@" <"$fifo" >"$OUT/fleet.out" 2>"$OUT/fleet.err" &
    FLEET_PID=$!
    exec {FLEET_FD}>"$fifo"
    rm -f "$fifo"
    for ((i = 0; i < 6000; i++)); do
        grep -qx ready "$OUT/fleet.out" 2>/dev/null && return 0
        kill -0 "$FLEET_PID" 2>/dev/null || { echo "busfleet failed: $(tail -n 3 "$OUT/fleet.err")" >&2; return 1; }
        sleep 0.1
    done
    return 1
}
stop_fleet() {
    [ -n "${FLEET_FD:-}" ] && exec {FLEET_FD}>&- && FLEET_FD=
    [ -n "${FLEET_PID:-}" ] && { wait "$FLEET_PID" 2>/dev/null || true; FLEET_PID=; }
}
trap 'stop_fleet; stop_server' EXIT

rounds() { # SCEN N REGISTRY_SSH REGISTRY_BUS BROKER_PID (an empty registry skips that side)
    local scen=$1 n=$2 ssh=$3 bus=$4 broker=$5 r
    [ -n "$ssh" ] && push "$scen" ssh "$n" warmup "$ssh" "$broker"
    [ -n "$bus" ] && push "$scen" bus "$n" warmup "$bus" "$broker"
    for ((r = 1; r <= RUNS; r++)); do
        echo "    $scen run $r" >&2
        [ -n "$ssh" ] && push "$scen" ssh "$n" "$r" "$ssh" "$broker"
        [ -n "$bus" ] && push "$scen" bus "$n" "$r" "$bus" "$broker"
    done
    echo "load after $scen: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/env.txt"
}

for n in "${LAB_NS[@]}"; do
    echo "==> lab-N$n: bus_lab_serve $n" >&2
    start_server "lab-N$n" "$REL/examples/bus_lab_serve" "$n"
    rounds "lab-N$n" "$n" "$REGISTRY_SSH" "$REGISTRY_BUS" "$BROKER_PID"
    stop_server
done

for n in "${SIM_NS[@]}"; do
    echo "==> sim-N$n: broker + busfleet --mirrors $n" >&2
    start_server "broker-N$n" "$REL/examples/bus_lab_serve" 0
    start_fleet "$REL/examples/busfleet" --url "$BROKER_URL" --dir "$OUT/fleet-N$n" --mirrors "$n" \
        --signer "$MASTER_KEY.pub" --signing-key "$MASTER_KEY" --origin bench-master \
        --topic-prefix "$TOPIC_PREFIX"
    rounds "sim-N$n" "$n" "" "$OUT/fleet-N$n/mirrors.toml" "$BROKER_PID"
    stop_fleet
    stop_server
done

for n in "${SSH_SIM_NS[@]}"; do
    echo "==> sim-N$n: simfleet --mirrors $n" >&2
    start_server "simfleet-N$n" "$REL/examples/simfleet" --dir "$OUT/simfleet-N$n" --mirrors "$n" --delay-ms 0
    rounds "sim-N$n" "$n" "$OUT/simfleet-N$n/mirrors.toml" "" ""
    stop_server
done

echo "## bus ($(date -u '+%Y-%m-%d %H:%M UTC'), results in ${OUT#"$BENCH_ROOT"/})"
echo
sed 's/^/    /' "$OUT/env.txt"
echo
python3 - "$TSV" <<'PY' | tee "$OUT/summary.md"
import collections, statistics, sys
rows = collections.defaultdict(list)
lines = open(sys.argv[1]).read().split("\n")[1:]
for line in filter(None, lines):
    f = line.split()
    rows[(f[0], f[1], int(f[2]))].append(f)
print("| point | transport | N | runs | wall s | last answer ms | master CPU s | master peak RSS MiB | broker CPU s | ok / failed |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
def med(rs, i, conv=float):
    vals = [conv(r[i]) for r in rs if r[i] != "-"]
    return statistics.median(vals) if vals else None
for (scen, transport, n), rs in sorted(rows.items(), key=lambda k: (k[0][2], k[0][0], k[0][1])):
    wall, last = med(rs, 4), med(rs, 8)
    cpu = statistics.median(float(r[5]) + float(r[6]) for r in rs)
    rss = med(rs, 7) / 1024
    broker = med(rs, 9)
    ok = min(int(r[10]) for r in rs); failed = max(int(r[11]) for r in rs)
    print(f"| {scen} | {transport} | {n} | {len(rs)} | {wall:.2f} | {last:.0f} | {cpu:.2f} | {rss:.1f} | "
          f"{'-' if broker is None else f'{broker:.2f}'} | {ok} / {failed} |")
PY
