#!/usr/bin/env python3
"""Markdown tables from the raw results of benches/tiers.sh (examples/tiers-bench.rs).

    tiers-summary.py TIERS_TSV

TIERS_TSV lines: topology filelist run files last_s first_s push_s push_rc origin_cpu_s
hubs_cpu_s origin_served hubs_served mirror_runs downstream_pushes. Run `warmup` is not a
result; `null` is the push with nothing changed; medians and ranges are over the numbered runs.
"""

import statistics
import sys
from collections import OrderedDict


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def rng(xs, scale=1.0, fmt="{:.2f}"):
    if not xs:
        return "n/a"
    return f"{fmt.format(med(xs) * scale)} ({fmt.format(min(xs) * scale)}-{fmt.format(max(xs) * scale)})"


def distinct(rows, key):
    return ",".join(sorted({str(r[key]) for r in rows}))


def main():
    rounds = OrderedDict()
    nulls = OrderedDict()
    files = None
    with open(sys.argv[1]) as f:
        for line in f:
            if not line.strip():
                continue
            (topo, fl, run, n, last, first, push, rc, ocpu, hcpu, oserved, hserved,
             runs, down) = line.split()
            files = n
            row = {
                "last": float(last) if last != "-" else None,
                "first": float(first) if first != "-" else None,
                "push": float(push), "rc": rc, "ocpu": float(ocpu), "hcpu": float(hcpu),
                "oserved": int(oserved), "hserved": int(hserved), "runs": int(runs),
                "down": int(down),
            }
            if run == "warmup":
                continue
            target = nulls if run == "null" else rounds
            target.setdefault((topo, fl), []).append(row)

    print(f"A publish of changes in a {files}-file tree, one `mirrorpush push fedora`; 12 mirrors "
          "flat, or 3 hubs + 9 leaves:\n")
    print("| topology | file lists | ok rounds | push to last mirror s median (min-max) | to first mirror s | "
          "origin CPU ms median (min-max) | hub daemons' CPU ms median | runs served: origin / hubs | "
          "mirror runs | hub downstream pushes |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (topo, fl), rows in rounds.items():
        ok = [r for r in rows if r["rc"] == "0" and r["last"] is not None]
        print(f"| {topo} | {fl} | {len(ok)}/{len(rows)} | {rng([r['last'] for r in ok])} | "
              f"{med([r['first'] for r in ok]):.2f} | {rng([r['ocpu'] for r in ok], 1000, '{:.0f}')} | "
              f"{med([r['hcpu'] for r in ok]) * 1000:.0f} | {distinct(ok, 'oserved')} / {distinct(ok, 'hserved')} | "
              f"{distinct(ok, 'runs')} | {distinct(ok, 'down')} |")
    print()

    print("Ratios (medians of the rounds above):\n")
    print("| comparison | origin CPU | time to last mirror |")
    print("|---|---|---|")

    def ratio(a, b):
        ra, rb = rounds.get(a), rounds.get(b)
        if not ra or not rb:
            return None
        return (med([r["ocpu"] for r in ra]) / med([r["ocpu"] for r in rb]),
                med([r["last"] for r in ra]) / med([r["last"] for r in rb]))

    for fl in ("off", "on"):
        x = ratio(("flat", fl), ("tiered", fl))
        if x:
            print(f"| flat / tiered, file lists {fl} | {x[0]:.1f}x | {x[1]:.2f}x |")
    for topo in ("flat", "tiered"):
        x = ratio((topo, "off"), (topo, "on"))
        if x:
            print(f"| file lists off / on, {topo} | {x[0]:.1f}x | {x[1]:.2f}x |")
    x = ratio(("flat", "off"), ("tiered", "on"))
    if x:
        print(f"| flat without file lists / tiered with them | {x[0]:.1f}x | {x[1]:.2f}x |")
    print()

    if nulls:
        print("A push with nothing changed (one per configuration, after the rounds):\n")
        print("| topology | file lists | push s | origin CPU ms | hub daemons' CPU ms | runs served: origin / hubs | "
              "mirror runs | hub downstream pushes |")
        print("|---|---|---|---|---|---|---|---|")
        for (topo, fl), rows in nulls.items():
            for r in rows:
                print(f"| {topo} | {fl} | {r['push']:.2f} | {r['ocpu'] * 1000:.0f} | {r['hcpu'] * 1000:.0f} | "
                      f"{r['oserved']} / {r['hserved']} | {r['runs']} | {r['down']} |")
        print()


if __name__ == "__main__":
    main()
