#!/usr/bin/env python3
"""Markdown tables from benches/scale.sh's raw.tsv: medians per scenario and size, and the
ratios to `wc -l` of the same files in the same run."""
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

out = Path(sys.argv[1])
rows = defaultdict(list)  # (scen, n) -> [(wall, cpu, rss_mib)]
for line in (out / "raw.tsv").read_text().splitlines():
    scen, n, _run, wall, user, sys_, rss = line.split()
    rows[(scen, int(n))].append((float(wall), float(user) + float(sys_), int(rss) / 1024))
sizes = sorted({n for _, n in rows})


def med(scen, n, i):
    v = [r[i] for r in rows.get((scen, n), [])]
    return statistics.median(v) if v else None


def fmt(x, unit="s", digits=3):
    return "-" if x is None else f"{x:.{digits}f}{unit}"


def ratio(a, b):
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def runs(scen, n):
    return len(rows.get((scen, n), []))


print("Planner (examples/filelist-plan), medians; ratios to `wc -l` of both lists in the same run:\n")
print("| entries | wc -l both: wall s, CPU s | plan wall s | plan / wc wall | plan CPU s "
      "| plan / wc CPU | plan peak RSS MiB "
      "| null wall s | null / wc | null CPU s | null RSS MiB |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for n in sizes:
    if not runs("wc", n):
        continue
    wc = med("wc", n, 0)
    print(f"| {n} | {fmt(wc, '')}, {fmt(med('wc', n, 1), '')} | {fmt(med('plan', n, 0), '')} "
          f"| {ratio(med('plan', n, 0), wc)} "
          f"| {fmt(med('plan', n, 1), '')} | {ratio(med('plan', n, 1), med('wc', n, 1))} "
          f"| {fmt(med('plan', n, 2), '', 1)} "
          f"| {fmt(med('null', n, 0), '')} | {ratio(med('null', n, 0), wc)} "
          f"| {fmt(med('null', n, 1), '')} | {fmt(med('null', n, 2), '', 1)} |")

if any(runs("unsorted", n) for n in sizes):
    print("\nThe same lists with their [Files] lines reversed (not in list order: the index planner):\n")
    print("| entries | wc -l both s | plan wall s | plan / wc | plan CPU s | plan peak RSS MiB |")
    print("|---|---|---|---|---|---|")
    for n in sizes:
        if not runs("unsorted", n):
            continue
        wc = med("wcr", n, 0)
        print(f"| {n} | {fmt(wc, '')} | {fmt(med('unsorted', n, 0), '')} "
              f"| {ratio(med('unsorted', n, 0), wc)} | {fmt(med('unsorted', n, 1), '')} "
              f"| {fmt(med('unsorted', n, 2), '', 1)} |")

print("\n`mirrorpush filelist --changed DIR` (one leaf dir) against the N-entry previous list:\n")
print("| entries | wc -l list s | --changed wall s | --changed / wc | CPU s | peak RSS MiB |")
print("|---|---|---|---|---|---|")
for n in sizes:
    if not runs("changed", n):
        continue
    wc = med("wc1", n, 0)
    print(f"| {n} | {fmt(wc, '')} | {fmt(med('changed', n, 0), '')} | {ratio(med('changed', n, 0), wc)} "
          f"| {fmt(med('changed', n, 1), '')} | {fmt(med('changed', n, 2), '', 1)} |")


def literal(n, name):
    p = out / f"{name}-{n}.stats"
    if not p.exists():
        return "-"
    m = re.search(r"Literal data: ([\d,]+)", p.read_text())
    return m.group(1) if m else "-"


print("\nThe upstream's side of a list fetch (`rsync --server --sender` alone), medians:\n")
print("| entries | changed list: upstream CPU ms | literal bytes sent | unchanged list: upstream CPU ms |")
print("|---|---|---|---|")
for n in sizes:
    if not runs("fetch", n):
        continue
    f, z = med("fetch", n, 1), med("fetchnull", n, 1)
    print(f"| {n} | {fmt(None if f is None else f * 1000, '', 1)} | {literal(n, 'fetch')} "
          f"| {fmt(None if z is None else z * 1000, '', 1)} |")

if any(runs("hnull", n) for n in sizes):
    print("\nThe handler's null run (`mirrorpush-handler sync`, local mode), medians; CPU is the handler's"
          " and its rsync's:\n")
    print("| entries | first run (fetch, compare, record): wall s, CPU s | null run: wall s, CPU s "
          "| fetch alone: wall s, CPU s | null run beyond the fetch: CPU s | null peak RSS MiB |")
    print("|---|---|---|---|---|---|")
    for n in sizes:
        if not runs("hnull", n):
            continue
        cpu, fetch = med("hnull", n, 1), med("hfetch", n, 1)
        print(f"| {n} | {fmt(med('hfirst', n, 0), '')}, {fmt(med('hfirst', n, 1), '')} "
              f"| {fmt(med('hnull', n, 0), '')}, {fmt(cpu, '')} "
              f"| {fmt(med('hfetch', n, 0), '')}, {fmt(fetch, '')} "
              f"| {fmt(None if cpu is None or fetch is None else cpu - fetch, '')} "
              f"| {fmt(med('hnull', n, 2), '', 1)} |")

for n in sizes:
    for name in ("plan", "unsorted"):
        p = out / f"{name}-{n}.out"
        if p.exists():
            print(f"\n{name}-{n}: {p.read_text().strip()}")
