#!/usr/bin/env bash
# File lists: what each part costs, on synthetic trees shaped like a distribution's
# (examples/filelist-tree.rs: leaf dirs of 100 packages, a repodata/repomd.xml and a symlink
# per group of 50 leaves).
#   full-N:    `mirrorpush filelist --checksum repomd.xml TREE`, a full scan of an N-file tree,
#              side by side with Fedora's Python create-filelist (`-c`, the same checksums) on
#              the same tree when FL_CREATE_FILELIST names a copy of it (it is not shipped
#              here). Afterwards the two lists' [Files] sections are compared, sorted.
#   changed-N: `--changed DIR` after a publish of 100 changes in DIR (a third rewritten, a
#              third removed, a third new; untimed, before every run) in the N-file tree.
#   plan-N:    the handler's planner (examples/filelist-plan.rs) between the N-entry list
#              before and after one such publish.
# Trees are built once under FL_TREES and kept (1.4M inodes for the default sizes); an untimed
# warm-up run first, so the page cache is warm as on a busy upstream.
#
#   benches/filelist.sh                                      # RUNS=5
#   FL_CREATE_FILELIST=/path/to/create-filelist benches/filelist.sh
#   FL_SIZES="100000 300000" RUNS=3 benches/filelist.sh
#
# Markdown tables on stdout; everything under target/bench/filelist/<time>/.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

TREES=${FL_TREES:-/tmp/mirrorpush-bench-trees}
SIZES=${FL_SIZES:-100000 300000 1000000}
PY=${FL_CREATE_FILELIST:-}
CHANGED_DIR=arch0/group10/pkg25
bench_build
bench_outdir filelist
MP=$REL/mirrorpush
TOOLS=mirrorpush
if [ -n "$PY" ]; then
    TOOLS="mirrorpush create-filelist"
    echo "create-filelist: $PY, sha256 $(sha256sum "$PY" | cut -d' ' -f1), $(python3 --version)" >>"$OUT/env.txt"
fi
echo "trees: $TREES; sizes: $SIZES; runs: $RUNS" >>"$OUT/env.txt"
mkdir -p "$OUT/lists" "$OUT/plan"

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

files_section() { sed -n '/^\[Files\]$/,/^$/p' "$1" | sed '1d;$d' | LC_ALL=C sort; }
sha1_section() { sed -n '/^\[Checksums SHA1\]$/,/^$/p' "$1" | sed '1d;$d' | LC_ALL=C sort; }

full_round() { # KIND TOOL RUN
    case $2 in
    mirrorpush)
        run_timed "full-$N" mirrorpush "$N" - - "$3" -- "$MP" filelist --checksum repomd.xml "$T"
        ;;
    create-filelist)
        run_timed "full-$N" create-filelist "$N" - - "$3" -- \
            python3 "$PY" -c -S "fullfiletimelist-t$N" -d "$T" -t "$OUT/lists/create-filelist-$N"
        ;;
    esac
}

publish() { "$REL/examples/filelist-tree" --touch "$T/$CHANGED_DIR" 100; }

changed_round() { # KIND TOOL RUN
    publish
    run_timed "changed-$N" mirrorpush "$N" - - "$3" -- \
        "$MP" filelist --checksum repomd.xml --changed "$CHANGED_DIR" "$T"
}

plan_round() { # KIND TOOL RUN
    run_timed "plan-$N" mirrorpush "$N" - - "$3" -- \
        "$REL/examples/filelist-plan" "$OUT/plan/baseline-$N" "$OUT/plan/fetched-$N" "$OUT/plan"
}

for N in $SIZES; do
    T=$(tree_for "$N")
    list=$T/fullfiletimelist-t$N
    echo "==> full scan, $N files" >&2
    bench_rounds "full-$N" "$TOOLS" "$RUNS" 0 full_round
    echo "entries in the list of t$N: $(files_section "$list" | wc -l)" >>"$OUT/env.txt"
    if [ -n "$PY" ]; then
        if diff <(files_section "$list") <(files_section "$OUT/lists/create-filelist-$N") >"$OUT/lists/diff-$N"; then
            echo "t$N: [Files] identical to create-filelist's (sorted)" >>"$OUT/env.txt"
        else
            echo "t$N: [Files] DIFFER from create-filelist's: $(grep -c '^[<>]' "$OUT/lists/diff-$N") lines, see lists/diff-$N" >>"$OUT/env.txt"
        fi
        if diff <(sha1_section "$list") <(sha1_section "$OUT/lists/create-filelist-$N") >"$OUT/lists/sha1-diff-$N"; then
            echo "t$N: [Checksums SHA1] identical to create-filelist's (sorted), $(sha1_section "$list" | wc -l) lines" >>"$OUT/env.txt"
        else
            echo "t$N: [Checksums SHA1] DIFFER from create-filelist's, see lists/sha1-diff-$N" >>"$OUT/env.txt"
        fi
    fi
    rm -f "$OUT/lists/create-filelist-$N"
done

N=${SIZES##* }
T=$TREES/t$N
echo "==> --changed $CHANGED_DIR, $N files" >&2
bench_rounds "changed-$N" mirrorpush "$RUNS" 0 changed_round
echo "==> planner, $N entries" >&2
cp "$T/fullfiletimelist-t$N" "$OUT/plan/baseline-$N"
publish
"$MP" filelist --checksum repomd.xml --changed "$CHANGED_DIR" "$T"
cp "$T/fullfiletimelist-t$N" "$OUT/plan/fetched-$N"
bench_rounds "plan-$N" mirrorpush "$RUNS" 0 plan_round
echo "plan-$N: $(cat "$OUT/runs/plan-$N.mirrorpush.1.out")" >>"$OUT/env.txt"
rm -f "$OUT/plan/baseline-$N" "$OUT/plan/fetched-$N" "$OUT/plan/transfer" "$OUT/plan/delete"
python3 benches/filelist-summary.py "$OUT/raw.tsv" | tee "$OUT/summary.md"
