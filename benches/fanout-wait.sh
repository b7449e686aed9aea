#!/usr/bin/env bash
# Wait mode at scale: the master holding N sessions open until each simulated mirror answers
# `synced` (examples/simfleet.rs --answer synced --answer-after MIN-MAX: each endpoint waits its
# own delay, drawn once per endpoint, before it answers, as a handler in wait mode does while
# its rsync runs). Measures the master's memory per waiting session and its CPU while the
# sessions wait, and how well the propagation line matches the simulated delays.
#
#   benches/fanout-wait.sh
#   WAIT_N=1000 WAIT_RUNS=3 WAIT_RTT=0 benches/fanout-wait.sh
#
# The push runs with -v: its first debug line ("stage starts", timestamped) anchors its
# started_ms/elapsed_ms on the clock of simfleet's --answer-log (a few thousand debug lines in
# all, a few ms of CPU).
# Scenarios (concurrency = N, registry timeout 5m, keepalive_interval at its default 15s):
#   wait-N1          one mirror answering after 10 s: the baseline for memory per session
#   wait-uniform     N mirrors answering after 1-60 s (uniform, seed = run number): accuracy
#   wait-idle        N mirrors all answering after 60 s: CPU while nothing but keepalives moves
# Markdown tables on stdout; raw results under target/bench/fanout-wait/<time>/.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

N=${WAIT_N:-1000}
WAIT_RUNS=${WAIT_RUNS:-3}
RTT=${WAIT_RTT:-0}
bench_build
bench_outdir fanout-wait
bench_traps
ulimit -n 65536 2>/dev/null || true
echo "# fanout-wait: N=$N runs=$WAIT_RUNS rtt=$RTT" >"$OUT/runs.tsv"
mkdir -p "$OUT/runs"

# scenario SCEN N MIN-MAX RUNS: one simfleet per run (each run its own seed), one push each.
scenario() {
    local scen=$1 n=$2 after=$3 runs=$4 run
    for ((run = 1; run <= runs; run++)); do
        echo "==> $scen run $run: $n mirrors answering synced after $after ms" >&2
        start_server "$scen" "$REL/examples/simfleet" --dir "$OUT/$scen" --mirrors "$n" \
            --delay-ms "$RTT" --answer synced --answer-after "$after" --seed "$run" \
            --threads "${SIM_THREADS:-1}" --answer-log "$OUT/runs/$scen.$run.answered"
        cp "$OUT/$scen/answers.tsv" "$OUT/runs/$scen.$run.answers.tsv"
        local result
        result=$(python3 benches/waitsample.py "$OUT/runs/$scen.$run.samples.tsv" \
            "$OUT/runs/$scen.$run.out" -- \
            "$REL/mirrorpush" -v --registry "$OUT/$scen/mirrors.toml" push --json \
            --concurrency "$n" fedora 2>"$OUT/runs/$scen.$run.err")
        stop_server
        echo "$scen $n $after $run $result" >>"$OUT/runs.tsv"
    done
    echo "load after $scen: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/env.txt"
}

scenario wait-N1 1 10000-10000 "$WAIT_RUNS"
scenario wait-uniform "$N" 1000-60000 "$WAIT_RUNS"
scenario wait-idle "$N" 60000-60000 "$WAIT_RUNS"

echo "## fanout-wait ($(date -u '+%Y-%m-%d %H:%M UTC'), results in ${OUT#"$BENCH_ROOT"/})"
echo
sed 's/^/    /' "$OUT/env.txt"
echo
python3 benches/summarize-wait.py "$OUT" | tee "$OUT/summary.md"
