#!/usr/bin/env python3
"""Runs a command and samples its whole process tree through /proc until it exits.

    procsum.py OUTFILE -- CMD [ARGS...]

Writes one line to OUTFILE: `<peak sum RSS KiB> <peak sum PSS KiB> <peak process count> <samples>`
and exits with the command's exit status. RSS counts shared pages (libc, libcrypto) once per
process; PSS divides each shared page among the processes that map it, so the PSS sum is the
tree's real memory. Zombies (exited, not yet reaped) are not counted. Sampling costs CPU (a /proc walk every few ms), so runs made through this
script are for memory only and are not timed.
"""

import os
import subprocess
import sys
import time


def tree(root):
    """root and its descendants, from a scan of /proc/*/stat (no /proc/PID/task/*/children here)."""
    kids = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        if fields[0] in (b"Z", b"X"):
            continue  # exited, not yet reaped: holds no memory, not counted
        kids.setdefault(int(fields[1]), []).append(int(name))
    seen, stack = [], [root]
    while stack:
        pid = stack.pop()
        seen.append(pid)
        stack.extend(kids.get(pid, ()))
    return seen


def rss_pss_kib(pid):
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def main():
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit(__doc__)
    out, cmd = sys.argv[1], sys.argv[3:]
    proc = subprocess.Popen(cmd)
    peak_rss = peak_pss = peak_procs = samples = 0
    while proc.poll() is None:
        pids = tree(proc.pid)
        rss = pss = 0
        for pid in pids:
            r, p = rss_pss_kib(pid)
            rss += r
            pss += p
        samples += 1
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        peak_procs = max(peak_procs, len(pids))
        time.sleep(0.002)
    with open(out, "w") as f:
        f.write(f"{peak_rss} {peak_pss} {peak_procs} {samples}\n")
    sys.exit(proc.returncode if proc.returncode >= 0 else 128 - proc.returncode)


if __name__ == "__main__":
    main()
