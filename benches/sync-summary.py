#!/usr/bin/env python3
"""Markdown tables from the raw results of benches/sync.sh (examples/sync-bench.rs).

    sync-summary.py RAW_TSV

RAW_TSV lines: scenario files mode run wall_s mirror_user_s mirror_sys_s upstream_cpu_s served
kind transferred deleted bytes_received rc. Runs `initial` (the first copies) and `warmup` are
not results; medians and ranges are over the numbered runs that exited 0.
"""

import statistics
import sys
from collections import OrderedDict


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def rng(xs, scale=1.0, fmt="{:.1f}"):
    if not xs:
        return "n/a"
    return f"{fmt.format(med(xs) * scale)} ({fmt.format(min(xs) * scale)}-{fmt.format(max(xs) * scale)})"


def main():
    groups = OrderedDict()
    initial = OrderedDict()
    with open(sys.argv[1]) as f:
        for line in f:
            if not line.strip():
                continue
            (scen, files, mode, run, wall, user, sys_, up, served, kind,
             transferred, deleted, received, rc) = line.split()
            row = {
                "wall": float(wall), "mcpu": float(user) + float(sys_), "up": float(up),
                "served": int(served), "kind": kind, "transferred": transferred,
                "deleted": deleted, "received": received, "rc": rc,
            }
            if run == "initial":
                initial[(int(files), mode)] = row
                continue
            if run == "warmup":
                continue
            g = groups.setdefault((scen, mode), {"files": int(files), "rows": []})
            g["rows"].append(row)

    def ok(scen, mode):
        g = groups.get((scen, mode))
        return [r for r in g["rows"] if r["rc"] == "0"] if g else []

    def col(rows, key):
        return [r[key] for r in rows]

    def kinds(rows):
        ks = sorted({r["kind"] for r in rows})
        return ",".join(ks)

    def changes(rows):
        s = sorted({f"+{r['transferred']} -{r['deleted']}" for r in rows})
        return ", ".join(s)

    scens = []
    for (scen, _mode) in groups:
        if scen not in scens:
            scens.append(scen)

    print("| scenario | mode | ok runs | run kind (handler status) | entries +transferred -deleted | "
          "daemon runs per sync | upstream CPU ms median (min-max) | mirror wall s median (min-max) | "
          "mirror CPU ms median |")
    print("|---|---|---|---|---|---|---|---|---|")
    for scen in scens:
        for mode in ("plain", "filelist"):
            g = groups.get((scen, mode))
            if not g:
                continue
            rows = ok(scen, mode)
            print(f"| {scen} | {mode} | {len(rows)}/{len(g['rows'])} | {kinds(rows)} | {changes(rows)} | "
                  f"{','.join(sorted({str(r['served']) for r in rows}))} | "
                  f"{rng(col(rows, 'up'), 1000)} | {rng(col(rows, 'wall'), 1, '{:.3f}')} | "
                  f"{med(col(rows, 'mcpu')) * 1000:.1f} |")
    print()

    print("Ratios plain / file-list (medians; above 1 means file-list sync costs less):\n")
    print("| scenario | upstream CPU | mirror wall | mirror CPU |")
    print("|---|---|---|---|")
    for scen in scens:
        p, fl = ok(scen, "plain"), ok(scen, "filelist")
        if p and fl:
            print(f"| {scen} | {med(col(p, 'up')) / med(col(fl, 'up')):.0f}x | "
                  f"{med(col(p, 'wall')) / med(col(fl, 'wall')):.1f}x | "
                  f"{med(col(p, 'mcpu')) / med(col(fl, 'mcpu')):.1f}x |")
    print()

    nulls = sorted((groups[(s, "filelist")]["files"], s) for s in scens
                   if s.startswith("null-") and (s, "filelist") in groups)
    if len(nulls) >= 2:
        (n0, s0), (n1, s1) = nulls[0], nulls[-1]
        print(f"Growth of the file-list null push from {n0} to {n1} files (median at {n1} / median at {n0}):\n")
        print("| mode | upstream CPU | mirror wall |")
        print("|---|---|---|")
        for mode in ("filelist", "plain"):
            a, b = ok(s0, mode), ok(s1, mode)
            if a and b:
                print(f"| {mode} | {med(col(b, 'up')) / med(col(a, 'up')):.2f}x | "
                      f"{med(col(b, 'wall')) / med(col(a, 'wall')):.2f}x |")
        print()

    if initial:
        print("First copies (untimed set-up, one run each; the file-list module has no baseline yet, "
              "so it is a plain rsync too):\n")
        print("| files | mode | wall s | upstream CPU s | entries transferred |")
        print("|---|---|---|---|---|")
        for (files, mode), r in initial.items():
            print(f"| {files} | {mode} | {r['wall']:.1f} | {r['up']:.2f} | {r['transferred']} |")
        print()


if __name__ == "__main__":
    main()
