#!/usr/bin/env bash
# File lists at Fedora's scale: the handler's planner, `mirrorpush filelist --changed` and what
# fetching a changed list costs the upstream, on Fedora-shaped synthetic lists
# (examples/filelist-synth.rs: every dir listed, paths like
# pub/fedora/linux/releases/<rel>/Everything/<arch>/os/Packages/<l>/<name>.rpm; the fetched
# list is the baseline with 1000 entries changed, 100 removed and 100 added). Each figure is
# given as a ratio to a `wc -l` of the same files in the same run, since absolute times drift
# on a shared machine.
#   wc-N:        `wc -l BASELINE FETCHED` (page cache warm), the reference for plan-N and null-N.
#   plan-N:      examples/filelist-plan BASELINE FETCHED (the handler's planner, as it runs it).
#   null-N:      the planner on two byte-identical lists (a copy of BASELINE): the null check.
#   unsorted-N:  the planner on the two lists with their [Files] sections reversed (another
#                order than list order: the index planner), at sizes up to SCALE_UNSORTED_MAX.
#   wc1-N:       `wc -l BASELINE`, the reference for changed-N.
#   changed-N:   `mirrorpush filelist --changed DIR TREE` where TREE's previous list is BASELINE
#                and TREE holds just DIR (one leaf dir, re-published before each run, untimed).
#   fetch-N:     the upstream side of `rsync -t` fetching FETCHED over the mirror's copy of
#                BASELINE (rsync's delta, as the handler fetches a list), metered alone: the
#                remote shell is examples/rusage around `rsync --server --sender`.
#   fetchnull-N: the same with an unchanged list (rsync's quick check: nothing is read).
#   hfirst-N:    the real handler (`mirrorpush-handler sync`, local mode, as the account nobody)
#                on a module whose upstream list is BASELINE and whose state dir holds it as the
#                baseline: the first run fetches it, compares it with the baseline (null) and
#                records the two files' identity. Once.
#   hnull-N:     the same handler again: a null run that recognises the two lists by `lstat`.
#   hfetch-N:    the fetch alone that hnull-N runs (`rsync -t` of the unchanged list over the
#                fetched copy, as the same account): hnull - hfetch is what a null run costs the
#                mirror beyond the fetch.
# Lists are generated once under SCALE_LISTS (default /tmp/mirrorpush-scale; 2.7 GB at 12M)
# and never committed.
#
#   benches/scale.sh                                   # RUNS=3, sizes 300000 1000000 12000000
#   SCALE_SIZES="300000 1000000" RUNS=5 benches/scale.sh
#   SCALE_PARTS="plan changed" benches/scale.sh        # some of: plan changed fetch null
#
# Markdown tables on stdout; raw results under target/bench/scale/<time>/.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

RUNS=${RUNS:-3}
SIZES=${SCALE_SIZES:-300000 1000000 12000000}
LISTS=${SCALE_LISTS:-/tmp/mirrorpush-scale}
UNSORTED_MAX=${SCALE_UNSORTED_MAX:-1000000}
LEAF=pub/fedora/linux/releases/40/Everything/x86_64/os/Packages/k
PARTS=${SCALE_PARTS:-plan changed fetch null}
part() { [[ " $PARTS " == *" $1 "* ]]; }
bench_build
bench_outdir scale
echo "lists: $LISTS; sizes: $SIZES; runs: $RUNS; parts: $PARTS; $(rsync --version | head -1)" >>"$OUT/env.txt"
: >"$OUT/raw.tsv"
mkdir -p "$LISTS" "$OUT/plan"

# timed SCEN N RUN -- CMD...: appends "scen n run wall user sys rss_kib" to raw.tsv.
timed() {
    local scen=$1 n=$2 run=$3
    shift 4
    "$REL/examples/rusage" "$OUT/rusage.tmp" -- "$@" >"$OUT/last.out" 2>"$OUT/last.err" || {
        echo "error: $scen-$n run $run failed:" >&2
        cat "$OUT/last.err" >&2
        exit 1
    }
    echo "$scen $n $run $(cat "$OUT/rusage.tmp")" >>"$OUT/raw.tsv"
}

reversed() { # LIST OUT: the same list with its [Files] lines in reverse order
    awk 'f && /^$/ { f = 0 } f { print > "/dev/stderr"; next } { print } /^\[Files\]$/ { f = 1 }' \
        "$1" 2>"$2.body" >"$2.frame"
    { sed -n '1,/^\[Files\]$/p' "$2.frame"; tac "$2.body"; sed -n '/^\[Files\]$/,$p' "$2.frame" | sed 1d; } >"$2"
    rm -f "$2.body" "$2.frame"
}

# The upstream's side of a list fetch: the remote shell runs `rsync --server --sender` under
# rusage, so only the upstream process is metered.
cat >"$OUT/rsh-meter" <<EOF
#!/bin/sh
shift # the host
exec "$REL/examples/rusage" "\$METER_OUT" -- "\$@"
EOF
chmod +x "$OUT/rsh-meter"

for N in $SIZES; do
    B=$LISTS/baseline-$N F=$LISTS/fetched-$N
    if [ ! -e "$LISTS/done-$N" ]; then
        echo "==> generating the $N-entry lists in $LISTS" >&2
        "$REL/examples/filelist-synth" "$B" "$F" "$N" >"$LISTS/counts-$N"
        cp "$B" "$LISTS/same-$N"
        touch "$LISTS/done-$N"
    fi
    echo "$N: $(cat "$LISTS/counts-$N"), $(du -m "$B" | cut -f1) MB per list" >>"$OUT/env.txt"
    if part plan && [ "$N" -le "$UNSORTED_MAX" ] && [ ! -e "$LISTS/rdone-$N" ]; then
        reversed "$B" "$LISTS/rbaseline-$N"
        reversed "$F" "$LISTS/rfetched-$N"
        touch "$LISTS/rdone-$N"
    fi
    cat "$B" "$F" "$LISTS/same-$N" >/dev/null # warm

    # The planner, against wc -l of the same two files.
    part plan && for run in $(seq 1 "$RUNS"); do
        timed wc "$N" "$run" -- wc -l "$B" "$F"
        timed plan "$N" "$run" -- "$REL/examples/filelist-plan" "$B" "$F" "$OUT/plan"
        cp "$OUT/last.out" "$OUT/plan-$N.out"
        timed null "$N" "$run" -- "$REL/examples/filelist-plan" "$B" "$LISTS/same-$N" "$OUT/plan"
    done
    if part plan && [ "$N" -le "$UNSORTED_MAX" ]; then
        cat "$LISTS/rbaseline-$N" "$LISTS/rfetched-$N" >/dev/null
        for run in $(seq 1 "$RUNS"); do
            timed wcr "$N" "$run" -- wc -l "$LISTS/rbaseline-$N" "$LISTS/rfetched-$N"
            timed unsorted "$N" "$run" -- \
                "$REL/examples/filelist-plan" "$LISTS/rbaseline-$N" "$LISTS/rfetched-$N" "$OUT/plan"
            cp "$OUT/last.out" "$OUT/unsorted-$N.out"
        done
    fi

    # --changed of one leaf dir against the N-entry previous list.
    part changed && {
    T=$LISTS/tree-$N
    rm -rf "$T"
    mkdir -p "$T/$LEAF"
    for i in $(seq 1 50); do echo "$i" >"$T/$LEAF/kpkg$i.rpm"; done
    for run in $(seq 1 "$RUNS"); do
        cp "$B" "$T/fullfiletimelist-tree-$N"
        echo "$run" >"$T/$LEAF/kpkg$run.rpm" # a publish in the dir
        cat "$T/fullfiletimelist-tree-$N" >/dev/null
        timed wc1 "$N" "$run" -- wc -l "$T/fullfiletimelist-tree-$N"
        timed changed "$N" "$run" -- "$REL/mirrorpush" filelist --changed "$LEAF" "$T"
    done
    rm -rf "$T"
    }

    # What a changed list costs the upstream to serve (rsync's delta), and an unchanged one.
    part fetch && {
    U=$LISTS/up-$N M=$LISTS/mirror-$N
    rm -rf "$U" "$M"
    mkdir -p "$U" "$M"
    cp -p "$F" "$U/fullfiletimelist-scale"
    for run in $(seq 1 "$RUNS"); do
        cp "$B" "$M/filelist.fetched" # the basis: the mirror's last list
        touch -d '2001-01-01' "$M/filelist.fetched"
        METER_OUT=$OUT/meter.tmp rsync -t --stats --rsh="$OUT/rsh-meter" \
            "localhost:$U/fullfiletimelist-scale" "$M/filelist.fetched" >"$OUT/fetch-$N.stats"
        cmp -s "$F" "$M/filelist.fetched" || { echo "error: fetched list differs" >&2; exit 1; }
        echo "fetch $N $run $(cat "$OUT/meter.tmp")" >>"$OUT/raw.tsv"
        METER_OUT=$OUT/meter.tmp rsync -t --stats --rsh="$OUT/rsh-meter" \
            "localhost:$U/fullfiletimelist-scale" "$M/filelist.fetched" >"$OUT/fetchnull-$N.stats"
        echo "fetchnull $N $run $(cat "$OUT/meter.tmp")" >>"$OUT/raw.tsv"
    done
    rm -rf "$U" "$M"
    }
    # The handler's null run, end to end (local mode: no sshd; as an unprivileged account).
    part null && {
    HD=$LISTS/handler-$N
    rm -rf "$HD"
    mkdir -p "$HD/up" "$HD/dest" "$HD/state/scale"
    ln "$B" "$HD/up/fullfiletimelist-scale"
    cp "$B" "$HD/state/scale/filelist.baseline"
    printf 'state_dir = "%s"\nrsync = "%s"\n\n[modules.scale]\nsource = "%s"\ndest = "%s"\nfilelist = "fullfiletimelist-scale"\n' \
        "$HD/state" "$(command -v rsync)" "$HD/up/" "$HD/dest" >"$HD/handler.toml"
    chown -R nobody:nogroup "$HD/dest" "$HD/state"
    AS=(setpriv --reuid=nobody --regid=nogroup --clear-groups)
    HCMD=("${AS[@]}" "$REL/mirrorpush-handler" --config "$HD/handler.toml" sync scale)
    timed hfirst "$N" 1 -- "${HCMD[@]}"
    for run in $(seq 1 "$RUNS"); do
        timed hnull "$N" "$run" -- "${HCMD[@]}"
        timed hfetch "$N" "$run" -- "${AS[@]}" rsync -t "$HD/up/fullfiletimelist-scale" "$HD/state/scale/filelist.fetched"
    done
    "${AS[@]}" "$REL/mirrorpush-handler" --config "$HD/handler.toml" status --json >"$OUT/handler-$N.json"
    cp "$HD/state/handler.log" "$OUT/handler-$N.log"
    # Every run null, and only the first compared the lists.
    [ "$(grep -c 'ran null (all)' "$OUT/handler-$N.log")" = $((RUNS + 1)) ] &&
        [ "$(grep -c 'verdict=filelist-compared' "$OUT/handler-$N.log")" = 1 ] ||
        { echo "error: the handler's runs were not null, or compared more than once: see $OUT/handler-$N.log" >&2; exit 1; }
    rm -rf "$HD"
    }
    echo "load after $N: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/env.txt"
done

python3 benches/scale-summary.py "$OUT" | tee "$OUT/summary.md"
