#!/usr/bin/env bash
# Fan-out on the real test lab: N OpenSSH sshd mirrors on loopback, each forcing
# mirrorpush-handler (modules in detach mode), pushed by `mirrorpush push` and by parallel-ssh
# (OpenSSH's ssh, one process per mirror) with the same request and the same concurrency.
#
#   benches/fanout-lab.sh [N...]          # default: 10 50
#
# For each N: one warm-up run per tool, then RUNS (default 5) timed runs per tool, alternating
# which tool goes first, waiting between runs until the detached handler runners (and their
# rsyncs) have finished; then RSS_RUNS untimed runs per tool sampled for the process tree's
# memory. Markdown table on stdout; raw results under target/bench/fanout-lab/<time>/.
# LAB_HANDLER=/bin/echo runs the lab with a trivial forced command instead of the handler.
# BENCH_TOOLS="mirrorpush pssh pssh-curve25519" adds pssh pinned to the master's key exchange.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

NS=("$@")
[ ${#NS[@]} -gt 0 ] || NS=(10 50)
bench_build
bench_outdir fanout-lab
bench_traps
ulimit -n 65536 2>/dev/null || true
echo "# fanout-lab: N=${NS[*]} RUNS=$RUNS RSS_RUNS=$RSS_RUNS tools: $BENCH_TOOLS" >"$OUT/raw.tsv"
echo "forced command: ${LAB_HANDLER:-target/release/mirrorpush-handler}" >>"$OUT/env.txt"

# Waits until no process other than the lab's own servers names the lab dir (detached runners).
lab_quiet() {
    local i
    for ((i = 0; i < 600; i++)); do
        [ "$(pgrep -c -f -- "$LAB_DIR" || true)" -le "$LAB_BASELINE" ] && return 0
        sleep 0.05
    done
    echo "warning: detached runners still busy after 30 s" >&2
}

for n in "${NS[@]}"; do
    scen=lab-N$n
    echo "==> $scen: starting the lab" >&2
    # LAB_HANDLER overrides the forced command (e.g. /bin/echo, to smoke-test the harness
    # before the handler exists); the default is target/release/mirrorpush-handler.
    start_server "lab$n" "$REL/examples/lab_serve" "$n" ${LAB_HANDLER:+"$LAB_HANDLER"}
    LAB_BASELINE=$(pgrep -c -f -- "$LAB_DIR" || true)
    tools=$BENCH_TOOLS
    if bench_has_tool mirrorpush && ! master_ready "$REGISTRY"; then
        echo "note: target/release/mirrorpush is not the real master yet: pssh only" | tee -a "$OUT/env.txt" >&2
        tools=${tools//mirrorpush/}
    fi
    SSH_OPTS=$(pssh_ssh_opts "$IDENTITY" "$KNOWN_HOSTS")
    run_tool() { # KIND(timed|rss) TOOL RUN
        local kind=$1 tool=$2 run=$3 cmd
        case $tool in
        mirrorpush) cmd=("$REL/mirrorpush" --registry "$REGISTRY" push --json --concurrency "$n" fedora) ;;
        pssh) cmd=(parallel-ssh -h "$PSSH_HOSTS" -p "$n" -l "$LAB_USER" -t 300 -x "$SSH_OPTS" 'sync fedora') ;;
        # OpenSSH 9.2 picks sntrup761x25519-sha512 against sshd 9.2, which russh does not
        # offer; this variant pins the key exchange the master gets (curve25519-sha256).
        pssh-curve25519) cmd=(parallel-ssh -h "$PSSH_HOSTS" -p "$n" -l "$LAB_USER" -t 300
            -x "$SSH_OPTS -o KexAlgorithms=curve25519-sha256" 'sync fedora') ;;
        esac
        if [ "$kind" = timed ]; then
            run_timed "$scen" "$tool" "$n" "$n" 0 "$run" -- "${cmd[@]}"
        else
            run_rss "$scen" "$tool" "$n" "$run" -- "${cmd[@]}"
        fi
        lab_quiet
    }
    bench_rounds "$scen" "$tools" "$RUNS" "$RSS_RUNS" run_tool
    stop_server
done

echo "## fanout-lab ($(date -u '+%Y-%m-%d %H:%M UTC'), results in ${OUT#"$BENCH_ROOT"/})"
echo
sed 's/^/    /' "$OUT/env.txt"
echo
bench_summary
