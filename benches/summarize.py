#!/usr/bin/env python3
"""Markdown tables from the raw results of benches/fanout-*.sh.

    summarize.py RAW_TSV [RSS_TSV]
    summarize.py --conn CONN_TSV RTT_MS RAW_TSV


RAW_TSV lines: scenario tool n conc delay_ms run wall_s user_s sys_s maxrss_kib rc
RSS_TSV lines: scenario tool n run peak_sum_rss_kib peak_sum_pss_kib peak_procs samples rc
CONN_TSV lines (simfleet's view, one line per run): scenario tool run connections median_ms max_ms
Medians over the runs that exited 0 (failed runs are counted and shown, never averaged in).
"""

import statistics
import sys
from collections import OrderedDict

BASE = "mirrorpush"


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


def conn_main(conn_path, rtt_ms, raw_path):
    rtt_ms = float(rtt_ms)
    conns = OrderedDict()
    for scen, tool, _run, count, median_ms, max_ms in read(conn_path):
        c = conns.setdefault((scen, tool), {"count": [], "med": [], "max": []})
        c["count"].append(int(count))
        c["med"].append(float(median_ms))
        c["max"].append(float(max_ms))
    walls = {}
    for scen, tool, _n, _conc, _delay, _run, wall, *_rest, rc in read(raw_path):
        if rc == "0":
            walls.setdefault((scen, tool), []).append(float(wall))
    print("Per connection, as the simulated server sees it (accept to the client's EOF; "
          "medians over runs of each run's median, and the largest over all runs):\n")
    print("| scenario | tool | connections per run | per-connection ms median | slowest connection ms |")
    print("|---|---|---|---|---|")
    for (scen, tool), c in conns.items():
        print(f"| {scen} | {tool} | {med(c['count']):.0f} | {med(c['med']):.1f} | {max(c['max']):.1f} |")
    print()
    tools = sorted({t for (s, t) in walls if s.startswith("rtt-")})
    if not tools:
        return
    d0, dx = "rtt-N1-D0", f"rtt-N1-D{rtt_ms:g}"
    print(f"Round trips per mirror (N=1): (median at {rtt_ms:g} ms - median at 0 ms) / {rtt_ms:g} ms. "
          "The client's count includes the TCP handshake (modelled as one RTT by simfleet).\n")
    print("| tool | client wall ms at 0 | at RTT | round trips (client wall) "
          "| server-side connection ms at 0 | at RTT | round trips (server view) |")
    print("|---|---|---|---|---|---|---|")
    for tool in tools:
        w0, wx = med(walls.get((d0, tool), [])), med(walls.get((dx, tool), []))
        c0, cx = conns.get((d0, tool)), conns.get((dx, tool))
        m0 = med(c0["med"]) if c0 else None
        mx = med(cx["med"]) if cx else None
        k_wall = "n/a" if w0 is None or wx is None else f"{(wx - w0) * 1000 / rtt_ms:.2f}"
        k_conn = "n/a" if m0 is None or mx is None else f"{(mx - m0) / rtt_ms:.2f}"
        w0s = "n/a" if w0 is None else f"{w0 * 1000:.0f}"
        wxs = "n/a" if wx is None else f"{wx * 1000:.0f}"
        print(f"| {tool} | {w0s} | {wxs} | {k_wall} | {fmt(m0, 1)} | {fmt(mx, 1)} | {k_conn} |")
    print()


def main():
    if sys.argv[1] == "--conn":
        conn_main(*sys.argv[2:5])
        return
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
          "| peak RSS KiB, largest process | sum over process tree: peak RSS / PSS KiB, live processes |")
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
    peers = []
    for g in groups.values():
        for tool in g["tools"]:
            if tool != BASE and tool not in peers:
                peers.append(tool)
    for peer in peers:
        if not any(BASE in g["tools"] and peer in g["tools"] for g in groups.values()):
            continue
        print(f"Ratios {peer} / {BASE} (medians; above 1 means {BASE} is ahead):\n")
        print("| scenario | wall | CPU | peak RSS (largest process) | sum PSS |")
        print("|---|---|---|---|---|")
        for scen, g in groups.items():
            if BASE not in g["tools"] or peer not in g["tools"]:
                continue
            b, p = g["tools"][BASE], g["tools"][peer]
            sb, sp = sums.get((scen, BASE)), sums.get((scen, peer))
            spss = ratio(med(sp["pss"]) if sp and sp["pss"] else None, med(sb["pss"]) if sb and sb["pss"] else None)
            print(f"| {scen} | {ratio(med(p['wall']), med(b['wall']))} | {ratio(med(p['cpu']), med(b['cpu']))} "
                  f"| {ratio(med(p['rss']), med(b['rss']))} | {spss} |")
        print()


if __name__ == "__main__":
    main()
