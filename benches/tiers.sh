#!/usr/bin/env bash
# Origin load, flat against tiered (examples/tiers-bench.rs), on the real lab: 12 mirrors
# (real sshd forcing the real mirrorpush-handler, wait mode) pulling from one origin
# `rsync --daemon`, against 3 hubs pulling from the origin and 9 leaves pulling from the hubs
# (each hub serves its tree with its own rsync daemon and pushes its 3 leaves with mirrorpush
# after a run that changed something). Each with file-list sync off and on. A round: a publish
# of TIERS_CHANGES changes in one dir plus a marker file (untimed; with file lists on, the
# origin's list rewritten with `mirrorpush filelist --changed`), then one `mirrorpush push
# fedora` from the master; measured: time until the last mirror carries the marker, and the
# CPU of the origin daemon's children (cpuacct cgroup). Per configuration an untimed warm-up
# round, RUNS rounds, and one push with nothing changed.
#
#   benches/tiers.sh                           # RUNS=5, a 30000-file tree
#   TIERS_FILES=5000 RUNS=2 benches/tiers.sh   # a quick try
#
# The tree is built once under SYNC_TREES (default /tmp/mirrorpush-sync-trees) as
# tiers-<files> and changed by every round. Markdown tables on stdout; everything under
# target/bench/tiers/<time>/.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

TREES=${SYNC_TREES:-/tmp/mirrorpush-sync-trees}
FILES=${TIERS_FILES:-30000}
CHANGES=${TIERS_CHANGES:-100}
CHANGED_DIR=arch0/group00/pkg00
bench_build
bench_outdir tiers
{
    echo "tree: $TREES/tiers-$FILES; $CHANGES changes in $CHANGED_DIR per round; runs: $RUNS"
    echo "rsync: $(rsync --version | head -1)"
    echo "top before:"
    top -bn1 | head -15
} >>"$OUT/env.txt"

T=$TREES/tiers-$FILES
if [ ! -e "$T.done" ]; then
    rm -rf "$T"
    mkdir -p "$TREES"
    echo "==> building a $FILES-file tree in $T" >&2
    "$REL/examples/filelist-tree" "$T" "$FILES"
    touch "$T.done"
fi
"$REL/examples/tiers-bench" "$T" "$FILES" "$OUT" "$RUNS" "$CHANGED_DIR" "$CHANGES"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/env.txt"
python3 benches/tiers-summary.py "$OUT/tiers.tsv" | tee "$OUT/summary.md"
