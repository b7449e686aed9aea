# Shared helpers for benches/*.sh (sourced, not run).
# Environment knobs: RUNS (timed runs per tool and point, default 5), RSS_RUNS (extra sampled
# runs for the process-tree memory sum, default 1), BENCH_TOOLS ("mirrorpush pssh" by default),
# BENCH_NO_BUILD=1 (skip cargo build), BENCH_CMD_TIMEOUT (seconds per command, default 900).

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REL=$BENCH_ROOT/target/release
RUNS=${RUNS:-5}
RSS_RUNS=${RSS_RUNS:-1}
BENCH_TOOLS=${BENCH_TOOLS:-mirrorpush pssh}

bench_build() {
    if [ -z "${BENCH_NO_BUILD:-}" ]; then
        echo "==> cargo build --release --bins --examples" >&2
        (cd "$BENCH_ROOT" && cargo build --quiet --release --bins --examples)
    fi
}

# bench_outdir NAME: a fresh results dir target/bench/NAME/<time>, linked as .../latest.
bench_outdir() {
    local base=$BENCH_ROOT/target/bench/$1
    OUT=$base/$(date -u +%Y%m%dT%H%M%SZ)
    mkdir -p "$OUT"
    ln -sfn "$OUT" "$base/latest"
    {
        echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
        echo "host: $(nproc) cpus, $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(free -m | awk '/^Mem:/{print $2}') MiB, kernel $(uname -r)"
        echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
        echo "git: $(git -C "$BENCH_ROOT" rev-parse --short HEAD 2>/dev/null) $(git -C "$BENCH_ROOT" status --porcelain 2>/dev/null | grep -q . && echo '(dirty)')"
    } >"$OUT/env.txt"
}

bench_has_tool() { [[ " $BENCH_TOOLS " == *" $1 "* ]]; }

# The OpenSSH client options pssh passes to every ssh: the same key, strict host keys against
# the same known_hosts, no system config (the master reads none either), no prompts.
pssh_ssh_opts() { # IDENTITY KNOWN_HOSTS
    echo "-F /dev/null -i $1 -o IdentitiesOnly=yes -o UserKnownHostsFile=$2 -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes -o LogLevel=ERROR -o ConnectTimeout=30"
}

# run_timed SCEN TOOL N CONC DELAY_MS RUN -- CMD...: appends one line to $OUT/raw.tsv.
# examples/rusage.rs is `/usr/bin/time -f '%e %U %S %M'` at microsecond resolution: the
# command's own CPU plus that of every descendant it waited for (pssh's ssh children), and the
# peak RSS of the largest single process among them (floor: ~1.9 MiB, the wrapper's own
# high-water mark, which the kernel carries into the child across exec).
run_timed() {
    local scen=$1 tool=$2 n=$3 conc=$4 delay=$5 run=$6
    shift 7
    local base=$OUT/runs/$scen.$tool.$run rc=0 t
    mkdir -p "$OUT/runs"
    timeout "${BENCH_CMD_TIMEOUT:-900}" "$REL/examples/rusage" "$base.time" -- "$@" \
        >"$base.out" 2>"$base.err" </dev/null || rc=$?
    t=$(tail -n 1 "$base.time" 2>/dev/null || true)
    [[ $t =~ ^[0-9.]+\ [0-9.]+\ [0-9.]+\ [0-9]+$ ]] || t="0 0 0 0"
    # A warm-up run is kept under runs/ but is not a result.
    [ "$run" = warmup ] || echo "$scen $tool $n $conc $delay $run $t $rc" >>"$OUT/raw.tsv"
    return 0
}

# run_rss SCEN TOOL N RUN -- CMD...: an untimed run sampled by procsum.py; appends to $OUT/rss.tsv.
run_rss() {
    local scen=$1 tool=$2 n=$3 run=$4
    shift 5
    local base=$OUT/runs/$scen.$tool.rss$run rc=0
    mkdir -p "$OUT/runs"
    timeout "${BENCH_CMD_TIMEOUT:-900}" python3 "$BENCH_ROOT/benches/procsum.py" "$base.rss" -- "$@" \
        >"$base.out" 2>"$base.err" </dev/null || rc=$?
    echo "$scen $tool $n $run $(cat "$base.rss" 2>/dev/null || echo 0 0 0 0) $rc" >>"$OUT/rss.tsv"
    return 0
}

# start_server NAME CMD...: runs CMD with stdin from a FIFO this shell holds open, waits for a
# `ready` line on its stdout, and sources its KEY=VALUE lines. stop_server closes the FIFO
# (the server stops on EOF: lab_serve drops the Lab, which kills every process it started)
# and waits. If this shell dies, even by SIGKILL, the FIFO closes too: nothing outlives us.
start_server() {
    local name=$1
    shift
    local fifo=$OUT/$name.ctl i
    rm -f "$fifo"
    mkfifo "$fifo"
    "$@" <"$fifo" >"$OUT/$name.out" 2>"$OUT/$name.err" &
    SERVER_PID=$!
    exec {SERVER_FD}>"$fifo"
    rm -f "$fifo"
    for ((i = 0; i < 3000; i++)); do
        if grep -qx ready "$OUT/$name.out" 2>/dev/null; then
            eval "$(grep -E '^[A-Z_]+=' "$OUT/$name.out" | sed -E "s/^([A-Z_]+)=(.*)$/\1='\2'/")"
            return 0
        fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "error: $name exited before it was ready: $(tail -n 3 "$OUT/$name.err")" >&2
            stop_server
            return 1
        fi
        sleep 0.1
    done
    echo "error: $name not ready after 300 s" >&2
    stop_server
    return 1
}

stop_server() {
    if [ -n "${SERVER_FD:-}" ]; then
        exec {SERVER_FD}>&-
        SERVER_FD=
    fi
    if [ -n "${SERVER_PID:-}" ]; then
        # EOF first; SIGTERM (also a clean stop for both servers) if it has not gone in 60 s.
        local i
        for ((i = 0; i < 600; i++)); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
}

bench_traps() {
    trap stop_server EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# Medians of the runs, as a markdown table, to stdout and to $OUT/summary.md.
bench_summary() {
    python3 "$BENCH_ROOT/benches/summarize.py" "$OUT/raw.tsv" "$OUT/rss.tsv" | tee "$OUT/summary.md"
}

# master_ready REGISTRY: whether target/release/mirrorpush is the real master (not the stub).
master_ready() {
    "$REL/mirrorpush" --registry "$1" push --dry-run fedora >/dev/null 2>&1
}

# bench_rounds SCEN TOOLS RUNS RSS_RUNS CALLBACK: one untimed warm-up per tool, RUNS timed rounds
# (the tools alternate which goes first), then RSS_RUNS memory-sampled rounds; then the load
# average goes into env.txt. `CALLBACK KIND TOOL RUN` runs one tool once (KIND: timed or rss).
bench_rounds() {
    local scen=$1 tools=$2 runs=$3 rss_runs=$4 cb=$5 r tool order
    for tool in $tools; do "$cb" timed "$tool" warmup; done
    for ((r = 1; r <= runs; r++)); do
        order=$tools
        ((r % 2)) || order=$(echo "$tools" | tr ' ' '\n' | tac | tr '\n' ' ')
        for tool in $order; do
            echo "    $scen run $r: $tool" >&2
            "$cb" timed "$tool" "$r"
        done
    done
    for ((r = 1; r <= rss_runs; r++)); do
        for tool in $tools; do "$cb" rss "$tool" "$r"; done
    done
    echo "load after $scen: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/env.txt"
}
