#!/usr/bin/env python3
"""Tables for benches/fanout-wait.sh from its run directory.

    summarize-wait.py OUT_DIR

Reads OUT_DIR/runs.tsv (scenario n answer_after run wall cpu maxrss rc), and per run the
samples (runs/SCEN.RUN.samples.tsv), the JSON report (runs/SCEN.RUN.out) and the simulated
delays (runs/SCEN.RUN.answers.tsv). Prints markdown:
- cost: wall, CPU, peak RSS, and memory per waiting session against the N=1 scenario;
- idle CPU: CPU used while every session waits and nothing answers (the window between
  IDLE_FROM and IDLE_TO seconds), as a share of one core;
- accuracy: what the propagation line says against when the simulated mirrors answered.
"""
import json
import statistics
from datetime import datetime
import sys
from pathlib import Path

IDLE_FROM, IDLE_TO = 10.0, 55.0


def runs(out):
    rows = []
    for line in (out / "runs.tsv").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        scen, n, after, run, wall, cpu, rss, rc = line.split()
        rows.append(dict(scen=scen, n=int(n), after=after, run=run, wall=float(wall),
                         cpu=float(cpu), rss=int(rss), rc=int(rc)))
    return rows


def samples(out, scen, run):
    rows = []
    path = out / "runs" / f"{scen}.{run}.samples.tsv"
    for line in path.read_text().splitlines()[1:]:
        t, cpu, rss, lines = line.split()
        rows.append((float(t), float(cpu), int(rss), int(lines)))
    return rows


def report(out, scen, run):
    mirrors, summary = {}, None
    for line in (out / "runs" / f"{scen}.{run}.out").read_text().splitlines():
        v = json.loads(line)
        if "summary" in v:
            summary = v["summary"]
        else:
            mirrors[v["mirror"]] = v
    return mirrors, summary


def delays(out, scen, run):
    d = {}
    for line in (out / "runs" / f"{scen}.{run}.answers.tsv").read_text().splitlines():
        name, _port, ms = line.split()
        d[name] = int(ms)
    return d


def window(rows, lo, hi):
    """CPU seconds and answers between the samples nearest lo and hi seconds."""
    inside = [r for r in rows if lo <= r[0] <= hi]
    if len(inside) < 2:
        return None
    a, b = inside[0], inside[-1]
    return b[0] - a[0], b[1] - a[1], b[3] - a[3], max(r[2] for r in inside)


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    out = Path(sys.argv[1])
    rows = runs(out)
    by = {}
    for r in rows:
        by.setdefault(r["scen"], []).append(r)
    base = by.get("wait-N1")
    base_rss = med([r["rss"] for r in base]) if base else None

    print("| scenario | N | answer after (ms) | ok runs | wall s median | CPU s median | "
          "peak RSS KiB median | per waiting session KiB (peak - N=1 peak) / N |")
    print("|---|---|---|---|---|---|---|---|")
    for scen, rs in by.items():
        n = rs[0]["n"]
        ok = sum(1 for r in rs if r["rc"] == 0)
        rss = med([r["rss"] for r in rs])
        per = f"{(rss - base_rss) / n:.1f}" if base_rss and n > 1 else "baseline"
        print(f"| {scen} | {n} | {rs[0]['after']} | {ok}/{len(rs)} | {med([r['wall'] for r in rs]):.2f} | "
              f"{med([r['cpu'] for r in rs]):.3f} | {rss:.0f} | {per} |")
    print()

    print(f"CPU while the sessions wait, {IDLE_FROM:.0f}-{IDLE_TO:.0f} s after the push started "
          "(from /proc every 0.2 s; answers = JSON lines written in that window):")
    print()
    print("| scenario | run | window s | CPU s | share of one core | answers in window | "
          "CPU per answer ms | RSS in window KiB (max) |")
    print("|---|---|---|---|---|---|---|---|")
    for scen, rs in by.items():
        if rs[0]["n"] == 1:
            continue
        for r in rs:
            w = window(samples(out, scen, r["run"]), IDLE_FROM, IDLE_TO)
            if not w:
                continue
            span, cpu, answers, rss = w
            per = f"{cpu / answers * 1000:.2f}" if answers else "-"
            print(f"| {scen} | {r['run']} | {span:.1f} | {cpu:.2f} | {cpu / span * 100:.2f}% | "
                  f"{answers} | {per} | {rss} |")
    print()

    print("Propagation line against the simulated mirrors. The line's time runs from the start "
          "of the push to the last synced answer; the truth is when the last simulated mirror "
          "sent its answer (simfleet's --answer-log), counted from the same start (the "
          "timestamp of the master's `stage starts` debug line, taken right after the instant "
          "started_ms counts from; both clocks are the machine's, microsecond resolution). Per "
          "mirror: when the master got the answer (start + started_ms + elapsed_ms) minus when "
          "the mirror sent it. Delay: the simulated sync time.")
    print()
    print("| scenario | run | synced | propagation line | slowest delay ms | last answer sent, ms after start | "
          "line's time ms | line minus truth ms | answer to report per mirror ms: median / min / max |")
    print("|---|---|---|---|---|---|---|---|---|")
    for scen, rs in by.items():
        if rs[0]["n"] == 1:
            continue
        for r in rs:
            d = delays(out, scen, r["run"])
            mirrors, summary = report(out, scen, r["run"])
            start = push_start(out, scen, r["run"])
            sent = answered(out, scen, r["run"])
            ports = {m["port"]: m for m in mirrors.values()}
            lag = sorted(start + m["started_ms"] + m["elapsed_ms"] - sent[p]
                         for p, m in ports.items() if p in sent and m.get("answer") == "synced")
            if not lag or not summary:
                continue
            truth = max(sent.values()) - start
            within = summary["synced_within_ms"]
            print(f"| {scen} | {r['run']} | {summary['synced']}/{summary['selected']} | "
                  f"{summary['propagation']} | {max(d.values())} | {truth:.0f} | {within} | "
                  f"{within - truth:.0f} | {med(lag):.1f} / {lag[0]:.1f} / {lag[-1]:.1f} |")


def push_start(out, scen, run):
    """Unix ms of the master's `stage starts` debug line (stderr of the -v push)."""
    for line in (out / "runs" / f"{scen}.{run}.err").read_text().splitlines():
        if "stage starts" in line:
            stamp = line.split()[0].replace("Z", "+00:00")
            return datetime.fromisoformat(stamp).timestamp() * 1000
    raise SystemExit(f"{scen} run {run}: no 'stage starts' line in the master's stderr")


def answered(out, scen, run):
    """port -> Unix ms when the simulated mirror sent its answer."""
    sent = {}
    for line in (out / "runs" / f"{scen}.{run}.answered").read_text().splitlines():
        port, ms = line.split()
        sent[int(port)] = float(ms)
    return sent


if __name__ == "__main__":
    main()
