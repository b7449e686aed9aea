#!/usr/bin/env bash
# Where a push's CPU goes, per mirror: the master (`mirrorpush push`) under
# `valgrind --tool=callgrind` against the simulated fleet (examples/simfleet.rs, no delay),
# at two fleet sizes. Instructions are counted, not timed, so the figures do not drift with the
# machine's load, and instructions per mirror at the two sizes show what grows with N.
# Each function's own instructions are put in a bucket by the crate (or library) it belongs
# to: key exchange (curve25519), signatures (ed25519), hashes, ciphers, russh, tokio, our own
# code, the history database, allocation and the rest (benches/profile-summary.py).
#
#   benches/fanout-profile.sh                      # PROFILE_NS="50 500", concurrency 50
#   PROFILE_NS="20 200" PROFILE_CONCURRENCY=20 benches/fanout-profile.sh
#
# Needs valgrind (apt-get install valgrind). Markdown on stdout; callgrind files and
# callgrind_annotate output under target/bench/fanout-profile/<time>/.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

read -r -a NS <<<"${PROFILE_NS:-50 500}"
CONC=${PROFILE_CONCURRENCY:-50}
command -v valgrind >/dev/null || { echo "error: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
bench_build
bench_outdir fanout-profile
bench_traps
ulimit -n 65536 2>/dev/null || true
echo "valgrind: $(valgrind --version); concurrency $CONC; sizes ${NS[*]}" >>"$OUT/env.txt"

for n in "${NS[@]}"; do
    dir=$OUT/sim-N$n
    start_server "sim-N$n" "$REL/examples/simfleet" --dir "$dir" --mirrors "$n" --delay-ms 0 --threads 1
    # History in the run's own dir: the push records every mirror, as in production.
    sed -i "s|^\[defaults\]$|[defaults]\nhistory = \"$dir/history.db\"|" "$dir/mirrors.toml"
    "$REL/mirrorpush" --registry "$dir/mirrors.toml" push --concurrency "$CONC" fedora >/dev/null # warm
    valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.N$n" \
        "$REL/mirrorpush" --registry "$dir/mirrors.toml" push --json --concurrency "$CONC" fedora \
        >"$OUT/push-N$n.json" 2>"$OUT/valgrind-N$n.err"
    ok=$(grep -c '"ok":true' "$OUT/push-N$n.json" || true)
    echo "N=$n: $ok of $n mirrors ok under callgrind" >>"$OUT/env.txt"
    [ "$ok" = "$n" ] || { echo "error: only $ok of $n mirrors answered under callgrind: $OUT/push-N$n.json" >&2; exit 1; }
    callgrind_annotate --threshold=100 "$OUT/callgrind.N$n" >"$OUT/self-N$n.txt"
    callgrind_annotate --inclusive=yes --threshold=99 "$OUT/callgrind.N$n" >"$OUT/inclusive-N$n.txt"
    stop_server
done
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/env.txt"
python3 benches/profile-summary.py "$OUT" "${NS[@]}" | tee "$OUT/summary.md"
