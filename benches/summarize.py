#!/usr/bin/env python3
"""Markdown tables from the raw results of benches/fanout-*.sh.

    summarize.py RAW_TSV [RSS_TSV]

RAW_TSV lines: scenario tool n conc delay_ms run wall_s user_s sys_s maxrss_kib rc
RSS_TSV lines: scenario tool n run peak_sum_rss_kib peak_sum_pss_kib peak_procs samples rc
Medians over the runs that exited 0 (failed runs are counted and shown, never averaged in).
"""

import statistics
import sys
from collections import OrderedDict

BASE, PEER = "mirrorpush", "pssh"


def read(path):
    rows = []
    try:
        with open(path) as f:
            for line in f:
                if line.strip() and not line.startswith("#"):
                    rows.append(line.split())
    except FileNotFoundError:
        pass
    return rows


def med(xs):
    return statistics.median(xs) if xs else None


def fmt(x, digits=3):
    return "n/a" if x is None else f"{x:.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}x"


def main():
    raw = read(sys.argv[1])
    rss = read(sys.argv[2]) if len(sys.argv) > 2 else []
    groups = OrderedDict()
    for scen, tool, n, conc, delay, _run, wall, user, sys_, maxrss, rc in raw:
        g = groups.setdefault(scen, {"n": int(n), "conc": conc, "delay": delay, "tools": OrderedDict()})
        t = g["tools"].setdefault(tool, {"wall": [], "cpu": [], "rss": [], "runs": 0, "fail": []})
        t["runs"] += 1
        if rc == "0":
            t["wall"].append(float(wall))
            t["cpu"].append(float(user) + float(sys_))
            t["rss"].append(int(maxrss))
        else:
            t["fail"].append(rc)
    sums = {}
    for scen, tool, _n, _run, srss, spss, procs, _samples, rc in rss:
        s = sums.setdefault((scen, tool), {"rss": [], "pss": [], "procs": [], "fail": 0})
        if rc == "0":
            s["rss"].append(int(srss))
            s["pss"].append(int(spss))
            s["procs"].append(int(procs))
        else:
            s["fail"] += 1

    print("| scenario | tool | ok runs | wall s median (min-max) | CPU user+sys s median | CPU per mirror ms "
          "| peak RSS KiB, largest process | sum over process tree: peak RSS / PSS KiB, processes |")
    print("|---|---|---|---|---|---|---|---|")
    for scen, g in groups.items():
        for tool, t in g["tools"].items():
            ok = len(t["wall"])
            wall = med(t["wall"])
            span = f" ({min(t['wall']):.3f}-{max(t['wall']):.3f})" if ok else ""
            cpu = med(t["cpu"])
            per = None if cpu is None else cpu * 1000 / g["n"]
            s = sums.get((scen, tool))
            if s and s["rss"]:
                summ = f"{med(s['rss']):.0f} / {med(s['pss']):.0f}, {med(s['procs']):.0f}"
            else:
                summ = "not sampled" if not s else f"failed ({s['fail']} runs)"
            fails = f" (failed: exit {','.join(t['fail'])})" if t["fail"] else ""
            print(f"| {scen} | {tool} | {ok}/{t['runs']}{fails} | {fmt(wall)}{span} | {fmt(cpu)} | {fmt(per, 2)} "
                  f"| {fmt(med(t['rss']), 0)} | {summ} |")
    print()
    if any(BASE in g["tools"] and PEER in g["tools"] for g in groups.values()):
        print(f"Ratios {PEER} / {BASE} (medians; above 1 means {BASE} is ahead):\n")
        print("| scenario | wall | CPU | peak RSS (largest process) | sum PSS |")
        print("|---|---|---|---|---|")
        for scen, g in groups.items():
            if BASE not in g["tools"] or PEER not in g["tools"]:
                continue
            b, p = g["tools"][BASE], g["tools"][PEER]
            sb, sp = sums.get((scen, BASE)), sums.get((scen, PEER))
            spss = ratio(med(sp["pss"]) if sp else None, med(sb["pss"]) if sb else None)
            print(f"| {scen} | {ratio(med(p['wall']), med(b['wall']))} | {ratio(med(p['cpu']), med(b['cpu']))} "
                  f"| {ratio(med(p['rss']), med(b['rss']))} | {spss} |")
        print()


if __name__ == "__main__":
    main()
