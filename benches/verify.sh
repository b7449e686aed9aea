#!/usr/bin/env bash
# Verification at fleet scale, and the history at 10,000 pushes (issue 19):
#
#   benches/verify.sh
#   VERIFY_N=1000 RUNS=5 HISTORY_PUSHES=10000 HISTORY_MIRRORS=1000 benches/verify.sh
#
# 1. One round of `mirrorpush verify` over VERIFY_N simulated mirrors' web servers
#    (examples/verify-fleet.rs: one process, N loopback ports, each serving a trace file over
#    HTTP/1.1; registry concurrency 64): wall time, and the master's CPU per mirror, from
#    examples/rusage.rs. Each run starts from the same history (nothing verified yet).
# 2. A history of HISTORY_PUSHES pushes to HISTORY_MIRRORS mirrors, written through the
#    history module (examples/verify-fleet.rs history): the time to write it and its size;
#    then `report` of the latest push, of one push in the middle, `--last 10 --json` and
#    `--last 10 --html`, RUNS times each.
# Markdown tables on stdout and in target/bench/verify/<time>/summary.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

N=${VERIFY_N:-1000}
PUSHES=${HISTORY_PUSHES:-10000}
MIRRORS=${HISTORY_MIRRORS:-1000}
bench_build
bench_outdir verify
bench_traps
ulimit -n 65536 2>/dev/null || true
: >"$OUT/raw.tsv"

# median FIELD SCEN: the median of a column of raw.tsv (3 wall, 4 user, 5 sys, 6 rss KiB).
median() {
    awk -v f="$1" -v s="$2" '$1 == s { print $f }' "$OUT/raw.tsv" | sort -n |
        awk '{ a[NR] = $1 } END { if (NR) print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2); else print "nan" }'
}

# timed SCEN RUN -- CMD...: raw.tsv gets "scen run wall user sys maxrss rc".
timed() {
    local scen=$1 run=$2 rc=0 t
    shift 3
    "$REL/examples/rusage" "$OUT/$scen.$run.time" -- "$@" >"$OUT/$scen.$run.out" 2>"$OUT/$scen.$run.err" </dev/null || rc=$?
    t=$(tail -n 1 "$OUT/$scen.$run.time")
    echo "$scen $run $t $rc" >>"$OUT/raw.tsv"
}

echo "==> $N simulated web servers" >&2
mkdir -p "$OUT/fleet"
start_server fleet "$REL/examples/verify-fleet" serve "$N" "$OUT/fleet"
cp "$OUT/fleet/history.db" "$OUT/fleet/pristine.db"
for ((r = 0; r <= RUNS; r++)); do
    cp "$OUT/fleet/pristine.db" "$OUT/fleet/run.db"
    rm -f "$OUT/fleet/run.db-wal" "$OUT/fleet/run.db-shm"
    run=$r
    [ "$r" -eq 0 ] && run=warmup
    echo "    verify run $run" >&2
    timed verify "$run" -- "$REL/mirrorpush" --registry "$OUT/fleet/mirrors.toml" \
        --history "$OUT/fleet/run.db" verify --json
    if [ "$run" != warmup ]; then
        verified=$(tail -n 1 "$OUT/verify.$run.out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["summary"]["verified"])')
        echo "verify $run verified $verified of $N" >>"$OUT/verified.txt"
    fi
done
sed -i '/^verify warmup /d' "$OUT/raw.tsv"
stop_server

echo "==> history: $PUSHES pushes x $MIRRORS mirrors" >&2
"$REL/examples/verify-fleet" history "$OUT/history.db" "$PUSHES" "$MIRRORS" | tee "$OUT/history.txt" >&2
mid=$((PUSHES / 2))
for ((r = 1; r <= RUNS; r++)); do
    echo "    report run $r" >&2
    timed report-latest "$r" -- "$REL/mirrorpush" --registry /nonexistent --history "$OUT/history.db" report
    timed report-middle "$r" -- "$REL/mirrorpush" --registry /nonexistent --history "$OUT/history.db" report "$mid"
    timed report-last10-json "$r" -- "$REL/mirrorpush" --registry /nonexistent --history "$OUT/history.db" report --last 10 --json
    timed report-last10-html "$r" -- "$REL/mirrorpush" --registry /nonexistent --history "$OUT/history.db" report --last 10 --html "$OUT/report.html"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/env.txt"

{
    echo "## verify: one round over $N simulated mirrors (median of $RUNS runs)"
    echo
    echo "| mirrors | verified | wall s | master CPU s (user+sys) | CPU per mirror ms | peak RSS MiB |"
    echo "|---:|---:|---:|---:|---:|---:|"
    w=$(median 3 verify) u=$(median 4 verify) s=$(median 5 verify) m=$(median 6 verify)
    v=$(awk '{print $4}' "$OUT/verified.txt" | sort -n | head -1)
    awk -v n="$N" -v v="$v" -v w="$w" -v u="$u" -v s="$s" -v m="$m" 'BEGIN { printf "| %d | %d (lowest run) | %.2f | %.2f | %.2f | %.1f |\n", n, v, w, u + s, (u + s) * 1000 / n, m / 1024 }'
    echo
    echo "## history: $PUSHES pushes x $MIRRORS mirrors"
    echo
    sed 's/^/    /' "$OUT/history.txt"
    echo
    echo "| report | wall s | CPU s | peak RSS MiB |"
    echo "|---|---:|---:|---:|"
    for scen in report-latest report-middle report-last10-json report-last10-html; do
        w=$(median 3 $scen) u=$(median 4 $scen) s=$(median 5 $scen) m=$(median 6 $scen)
        awk -v sc="$scen" -v w="$w" -v u="$u" -v s="$s" -v m="$m" 'BEGIN { printf "| %s | %.3f | %.3f | %.1f |\n", sc, w, u + s, m / 1024 }'
    done
    echo
    cat "$OUT/env.txt"
} | tee "$OUT/summary.md"
