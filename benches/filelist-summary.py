#!/usr/bin/env python3
"""Markdown tables from the raw results of benches/filelist.sh.

    filelist-summary.py RAW_TSV

RAW_TSV lines (benches/lib.sh's run_timed): scenario tool n conc delay run wall_s user_s sys_s maxrss_kib rc
Medians over the runs that exited 0 (failed runs are counted and shown, never averaged in).
"""

import statistics
import sys
from collections import OrderedDict


def med(xs):
    return statistics.median(xs) if xs else None


def main():
    groups = OrderedDict()
    with open(sys.argv[1]) as f:
        for line in f:
            if not line.strip():
                continue
            scen, tool, n, _conc, _delay, _run, wall, user, sys_, rss, rc = line.split()
            t = groups.setdefault((scen, tool), {"n": int(n), "wall": [], "cpu": [], "rss": [], "runs": 0, "fail": []})
            t["runs"] += 1
            if rc == "0":
                t["wall"].append(float(wall))
                t["cpu"].append(float(user) + float(sys_))
                t["rss"].append(int(rss))
            else:
                t["fail"].append(rc)

    print("| scenario | tool | ok runs | wall s median (min-max) | CPU user+sys s median | peak RSS MiB |")
    print("|---|---|---|---|---|---|")
    for (scen, tool), t in groups.items():
        ok = len(t["wall"])
        fails = f" (failed: exit {','.join(t['fail'])})" if t["fail"] else ""
        if ok:
            print(f"| {scen} | {tool} | {ok}/{t['runs']}{fails} | {med(t['wall']):.3f} "
                  f"({min(t['wall']):.3f}-{max(t['wall']):.3f}) | {med(t['cpu']):.3f} | {med(t['rss']) / 1024:.1f} |")
        else:
            print(f"| {scen} | {tool} | 0/{t['runs']}{fails} | n/a | n/a | n/a |")
    print()
    pairs = [(s, groups[(s, "mirrorpush")], groups[(s, "create-filelist")])
             for (s, tool) in groups if tool == "create-filelist" and (s, "mirrorpush") in groups]
    if pairs:
        print("create-filelist / mirrorpush (medians; above 1 means mirrorpush is ahead):\n")
        print("| scenario | wall | CPU |")
        print("|---|---|---|")
        for scen, mp, py in pairs:
            if mp["wall"] and py["wall"]:
                print(f"| {scen} | {med(py['wall']) / med(mp['wall']):.1f}x | {med(py['cpu']) / med(mp['cpu']):.1f}x |")
        print()


if __name__ == "__main__":
    main()
