#!/usr/bin/env bash
# Fan-out at scale against the simulated fleet (examples/simfleet.rs: N russh endpoints on
# loopback behind a per-connection delay line that models a round-trip time D), pushed by
# `mirrorpush push` and by parallel-ssh (one OpenSSH ssh per endpoint), same request, same
# concurrency (= N, so the round trips and not the queue set the time).
#
#   benches/fanout-sim.sh
#   SIM_NS="100 500 1000" SIM_DELAYS="0 50 200" RUNS=5 RSS_RUNS=1 SIM_THREADS=1 benches/fanout-sim.sh
#
# Then the round trips per mirror: N=1 at D=0 and D=200 ms, RTT_RUNS runs each (default RUNS);
# round trips = (median wall at 200 ms - median wall at 0) / 200 ms, from the client's wall time
# and from the server's view of each connection (accept to the client's EOF, logged by simfleet).
# Markdown tables on stdout; raw results under target/bench/fanout-sim/<time>/.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

read -r -a NS <<<"${SIM_NS:-100 500 1000}"
read -r -a DELAYS <<<"${SIM_DELAYS:-0 50 200}"
RTT_RUNS=${RTT_RUNS:-$RUNS}
RTT_DELAY=${RTT_DELAY:-200}
bench_build
bench_outdir fanout-sim
bench_traps
ulimit -n 65536 2>/dev/null || true
echo "# fanout-sim: N=${NS[*]} D=${DELAYS[*]} RUNS=$RUNS RSS_RUNS=$RSS_RUNS tools: $BENCH_TOOLS" >"$OUT/raw.tsv"
echo "simfleet threads: ${SIM_THREADS:-1}" >>"$OUT/env.txt"
: >"$OUT/rss.tsv"
: >"$OUT/conn.tsv"
MASTER_NOTE_DONE=

# conn_stats SCEN TOOL RUN LOG BEFORE N DEST: waits for N new lines in simfleet's connection
# log, appends "scen tool run count median_ms max_ms" to DEST.
conn_stats() {
    local scen=$1 tool=$2 run=$3 log=$4 before=$5 n=$6 dest=$7 i
    for ((i = 0; i < 100; i++)); do
        [ $(($(wc -l <"$log") - before)) -ge "$n" ] && break
        sleep 0.05
    done
    tail -n +$((before + 1)) "$log" | sort -n | awk -v s="$scen" -v t="$tool" -v r="$run" '
        { v[NR] = $1 } END {
            if (NR == 0) { print s, t, r, 0, 0, 0; exit }
            m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            print s, t, r, NR, m, v[NR] }' >>"$dest"
}

# point SCEN N DELAY RUNS RSS_RUNS [SIMFLEET ARGS]: one simfleet, warm-up, timed runs, sampled runs.
point() {
    local scen=$1 n=$2 d=$3 runs=$4 rss_runs=$5 tools=$BENCH_TOOLS
    shift 5
    local dir=$OUT/$scen
    echo "==> $scen: simfleet --mirrors $n --delay-ms $d $*" >&2
    start_server "$scen" "$REL/examples/simfleet" --dir "$dir" --mirrors "$n" --delay-ms "$d" \
        --threads "${SIM_THREADS:-1}" --conn-log "$dir.conn.log" "$@"
    touch "$dir.conn.log" "$dir.trace"
    if bench_has_tool mirrorpush && ! master_ready "$dir/mirrors.toml"; then
        [ -n "$MASTER_NOTE_DONE" ] || echo "note: target/release/mirrorpush is not the real master yet: pssh only" | tee -a "$OUT/env.txt" >&2
        MASTER_NOTE_DONE=1
        tools=${tools//mirrorpush/}
    fi
    local opts
    opts=$(pssh_ssh_opts "$dir/client_key" "$dir/known_hosts")
    one() { # KIND TOOL RUN
        local kind=$1 tool=$2 run=$3 cmd before
        case $tool in
        mirrorpush) cmd=("$REL/mirrorpush" --registry "$dir/mirrors.toml" push --json --concurrency "$n" fedora) ;;
        pssh) cmd=(parallel-ssh -h "$dir/pssh_hosts" -p "$n" -l mirrorpush -t 300 -x "$opts" 'sync fedora') ;;
        esac
        before=$(wc -l <"$dir.conn.log")
        local tbefore
        tbefore=$(wc -l <"$dir.trace")
        if [ "$kind" = timed ]; then
            run_timed "$scen" "$tool" "$n" "$n" "$d" "$run" -- "${cmd[@]}"
            # The warm-up's connections are waited for too, so none is counted in run 1.
            if [ "$run" = warmup ]; then
                conn_stats "$scen" "$tool" "$run" "$dir.conn.log" "$before" "$n" "$OUT/conn.warmup.tsv"
            else
                conn_stats "$scen" "$tool" "$run" "$dir.conn.log" "$before" "$n" "$OUT/conn.tsv"
                tail -n +$((tbefore + 1)) "$dir.trace" >"$OUT/runs/$scen.$tool.$run.trace"
            fi
        else
            run_rss "$scen" "$tool" "$n" "$run" -- "${cmd[@]}"
        fi
    }
    bench_rounds "$scen" "$tools" "$runs" "$rss_runs" one
    stop_server
}

for n in "${NS[@]}"; do
    for d in "${DELAYS[@]}"; do
        point "sim-N$n-D$d" "$n" "$d" "$RUNS" "$RSS_RUNS"
    done
done
if [ "$RTT_RUNS" -gt 0 ]; then
    point rtt-N1-D0 1 0 "$RTT_RUNS" 0
    point "rtt-N1-D$RTT_DELAY" 1 "$RTT_DELAY" "$RTT_RUNS" 0 --trace "$OUT/rtt-N1-D$RTT_DELAY.trace"
fi

echo "## fanout-sim ($(date -u '+%Y-%m-%d %H:%M UTC'), results in ${OUT#"$BENCH_ROOT"/})"
echo
sed 's/^/    /' "$OUT/env.txt"
echo
bench_summary
python3 benches/summarize.py --conn "$OUT/conn.tsv" "$RTT_DELAY" "$OUT/raw.tsv" | tee -a "$OUT/summary.md"
# One connection's timeline per tool at the RTT point: when (in RTTs since accept) the client
# sent something; each distinct value is a flight, i.e. the client waited for the server.
if [ "$RTT_RUNS" -gt 0 ]; then
    echo "Client flights at $RTT_DELAY ms (last run; times the client sent data, in RTTs since accept; EOF marked):"
    echo
    for f in "$OUT"/runs/rtt-N1-D"$RTT_DELAY".*."$RTT_RUNS".trace; do
        [ -s "$f" ] || continue
        t=${f#"$OUT"/runs/rtt-N1-D"$RTT_DELAY".}
        awk -v d="$RTT_DELAY" -v t="${t%%.*}" '$3 == "c2s" {
                k = sprintf("%.2f", $2 / d); s = s " " k ($4 == 0 ? "(EOF)" : "")
            } END { print "- " t ":" s }' "$f"
    done | tee -a "$OUT/summary.md"
fi
