#!/usr/bin/env bash
# File-list sync against plain rsync, end to end (examples/sync-bench.rs): a tree served by a
# real `rsync --daemon` on loopback, two mirrors synced by the real mirrorpush-handler run
# locally as the lab's unprivileged account, one module plain and one with
# `filelist = "fullfiletimelist-fedora"`. Per tree size:
#   null-N:    nothing changed upstream: the plain module's null rsync against the file-list
#              module's null run (the list fetched, found unchanged).
#   changed-N: (sizes in SYNC_CHANGED_SIZES) each round after a publish of SYNC_CHANGES changes
#              in one dir (filelist-tree --touch: a third rewritten, a third removed, a third
#              new) and the list rewritten with `mirrorpush filelist --changed` (both untimed).
# Upstream CPU is the daemon's children's, from a cgroup-v1 cpuacct group holding the daemon
# (it forks one child per connection); mirror wall and CPU are the handler's (with its rsync).
# An untimed warm-up run of each first (warm page cache), then RUNS rounds in which the two
# take turns at going first.
#
#   benches/sync.sh                                            # RUNS=5, 100k 300k 1M files
#   SYNC_SIZES="20000" SYNC_CHANGED_SIZES=20000 RUNS=2 benches/sync.sh   # a quick try
#
# Trees are built once under SYNC_TREES (default /tmp/mirrorpush-sync-trees) and reused; their
# lists are brought up to date (untimed) before each size. The mirrors live in the lab's temp
# dir and get a full first copy each run (untimed; minutes for 1M files).
# Markdown tables on stdout; everything under target/bench/sync/<time>/.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

TREES=${SYNC_TREES:-/tmp/mirrorpush-sync-trees}
SIZES=${SYNC_SIZES:-100000 300000 1000000}
CHANGED_SIZES=${SYNC_CHANGED_SIZES:-300000}
CHANGES=${SYNC_CHANGES:-100}
CHANGED_DIR=arch0/group00/pkg00
LIST=fullfiletimelist-fedora
bench_build
bench_outdir sync
{
    echo "trees: $TREES; sizes: $SIZES; changed: $CHANGED_SIZES ($CHANGES changes in $CHANGED_DIR); runs: $RUNS"
    echo "rsync: $(rsync --version | head -1)"
    echo "top before:"; top -bn1 | head -15
} >>"$OUT/env.txt"

tree_for() { # N: the N-file tree, built once
    local t=$TREES/t$1
    if [ ! -e "$t.done" ]; then
        rm -rf "$t"
        mkdir -p "$TREES"
        echo "==> building a $1-file tree in $t" >&2
        "$REL/examples/filelist-tree" "$t" "$1"
        touch "$t.done"
    fi
    echo "$t"
}

for N in $SIZES; do
    T=$(tree_for "$N")
    # Current list (a no-op when the tree did not change since it was written).
    "$REL/mirrorpush" filelist --checksum repomd.xml --output "$T/$LIST" "$T"
    extra=()
    if [[ " $CHANGED_SIZES " == *" $N "* ]]; then
        extra=(--changed "$CHANGED_DIR" "$CHANGES")
    fi
    echo "==> $N files: first copies, then null${extra:+ and changed} rounds" >&2
    "$REL/examples/sync-bench" "$T" "$N" "$OUT" "$RUNS" "${extra[@]}"
    echo "load after $N: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/env.txt"
done
python3 benches/sync-summary.py "$OUT/raw.tsv" | tee "$OUT/summary.md"
