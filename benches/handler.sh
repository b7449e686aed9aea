#!/usr/bin/env bash
# The handler alone: start-up to decision, as sshd runs it (SSH_CONNECTION and
# SSH_ORIGINAL_COMMAND set, `--config F --key bench` as in the forced command), against the
# floor of exec'ing /bin/true in the same environment.
#   refused:  SSH_ORIGINAL_COMMAND='sync ../x'   (malformed: exit 64, logged)
#   accepted: SSH_ORIGINAL_COMMAND='sync fedora' (detach mode: answer, start the detached runner,
#             exit 0). The runner is not timed: hyperfine waits for the handler process only.
#             The module's source is rsync://127.0.0.1:9/ where nothing listens, so each
#             runner's rsync fails at once (the handler needs a real rsync: it reads its
#             version); an untimed `--prepare` waits until the runner has released the
#             module's lock (flock on state_dir/fedora/lock, the lock the runner holds) so that
#             every timed request finds the module idle and takes the accepted path, not the
#             queued one (checked after the runs in the handler's log).
#
#   benches/handler.sh                 # HYPERFINE_RUNS=500 HYPERFINE_WARMUP=20 RSS_SAMPLES=20
#   HANDLER_BIN=... benches/handler.sh # another handler binary (default target/release/mirrorpush-handler)
#
# Markdown table on stdout; hyperfine JSON and the rest under target/bench/handler/<time>/.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

RUNS_H=${HYPERFINE_RUNS:-500}
WARMUP_H=${HYPERFINE_WARMUP:-20}
RSS_SAMPLES=${RSS_SAMPLES:-20}
bench_build
bench_outdir handler
H=${HANDLER_BIN:-$REL/mirrorpush-handler}
cfgdir=$OUT/mirror
mkdir -p "$cfgdir/state" "$cfgdir/dest"
cat >"$cfgdir/handler.toml" <<EOF
state_dir = "$cfgdir/state"
rsync = "/usr/bin/rsync"

[modules.fedora]
source = "rsync://127.0.0.1:9/fedora/"
dest = "$cfgdir/dest"
mode = "detach"
EOF
HCMD="$H --config $cfgdir/handler.toml --key bench"
# Until the previous request's detached runner has taken and released the module's lock.
mkdir -p "$cfgdir/state/fedora"
IDLE="/bin/sh -c 'sleep 0.01; flock -w 10 $cfgdir/state/fedora/lock true'"
export SSH_CONNECTION="127.0.0.1 40000 127.0.0.1 22" SSH_CLIENT="127.0.0.1 40000 22"
echo "hyperfine: $(hyperfine --version), runs $RUNS_H, warmup $WARMUP_H" >>"$OUT/env.txt"

# One probe of each case: what the handler answers, and its exit status.
probe() { # NAME REQUEST EXPECTED_EXIT
    local rc=0
    SSH_ORIGINAL_COMMAND=$2 $HCMD >"$OUT/probe.$1.out" 2>"$OUT/probe.$1.err" </dev/null || rc=$?
    echo "$1: SSH_ORIGINAL_COMMAND='$2' -> exit $rc, stdout: $(head -c 200 "$OUT/probe.$1.out" | tr '\n' ' '), stderr: $(head -c 200 "$OUT/probe.$1.err" | tr '\n' ' ')" >>"$OUT/env.txt"
    sleep 0.2
    [ "$rc" = "$3" ]
}
cases=(floor)
if probe refused 'sync ../x' 64; then cases+=(refused); else echo "note: refused probe did not exit 64 (handler not built yet?): skipped" | tee -a "$OUT/env.txt" >&2; fi
if probe accepted 'sync fedora' 0; then cases+=(accepted); else echo "note: accepted probe did not exit 0 (handler not built yet?): skipped" | tee -a "$OUT/env.txt" >&2; fi

hf() { # NAME REQUEST [hyperfine args...] COMMAND
    local name=$1 req=$2
    shift 2
    echo "==> $name" >&2
    SSH_ORIGINAL_COMMAND=$req hyperfine -N --style basic --warmup "$WARMUP_H" --runs "$RUNS_H" \
        --export-json "$OUT/$name.json" "$@" >"$OUT/$name.hyperfine.txt" 2>&1
    # Peak RSS of single runs (hyperfine does not report memory).
    local i rc
    for ((i = 0; i < RSS_SAMPLES; i++)); do
        rc=0
        SSH_ORIGINAL_COMMAND=$req /usr/bin/time -f '%M' -o "$OUT/$name.rss.tmp" "${@: -1}" >/dev/null 2>&1 </dev/null || rc=$?
        echo "$(tail -n 1 "$OUT/$name.rss.tmp") $rc" >>"$OUT/$name.rss"
        [ "$name" != accepted ] || { sleep 0.01; flock -w 10 "$cfgdir/state/fedora/lock" true; }
    done
    rm -f "$OUT/$name.rss.tmp"
}
for c in "${cases[@]}"; do
    case $c in
    floor) hf floor 'sync fedora' /bin/true ;;
    refused) hf refused 'sync ../x' -i "$HCMD" ;;
    accepted) hf accepted 'sync fedora' --prepare "$IDLE" "$HCMD" ;;
    esac
done
# Let the last detached runners end before reading the log.
sleep 0.5
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/env.txt"
echo "answers logged in state_dir (accepted vs queued): $(grep -rhoE '\b(accepted|queued)\b' "$cfgdir/state" 2>/dev/null | sort | uniq -c | tr '\n' ' ')" >>"$OUT/env.txt"

echo "## handler ($(date -u '+%Y-%m-%d %H:%M UTC'), results in ${OUT#"$BENCH_ROOT"/})"
echo
sed 's/^/    /' "$OUT/env.txt"
echo
python3 - "$OUT" "${cases[@]}" <<'EOF' | tee "$OUT/summary.md"
import json, statistics, sys
out, cases = sys.argv[1], sys.argv[2:]
rows = {}
for c in cases:
    r = json.load(open(f"{out}/{c}.json"))["results"][0]
    t = sorted(x * 1000 for x in r["times"])
    rss = [int(l.split()[0]) for l in open(f"{out}/{c}.rss") if l.split()]
    rows[c] = (t, rss)
floor = statistics.median(rows["floor"][0]) if "floor" in rows else 0
print("| case | runs | median ms | mean ms ± sd | min ms | p95 ms | median minus /bin/true ms | peak RSS KiB median (max) |")
print("|---|---|---|---|---|---|---|---|")
for c, (t, rss) in rows.items():
    m = statistics.median(t)
    p95 = t[min(len(t) - 1, int(len(t) * 0.95))]
    print(f"| {c} | {len(t)} | {m:.3f} | {statistics.mean(t):.3f} ± {statistics.stdev(t):.3f} | {t[0]:.3f} "
          f"| {p95:.3f} | {m - floor:.3f} | {statistics.median(rss):.0f} ({max(rss)}) |")
print()
EOF
