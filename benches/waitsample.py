#!/usr/bin/env python3
"""Runs a command and samples it while it runs, for the wait-mode fan-out benchmark.

    waitsample.py SAMPLES_TSV STDOUT_FILE -- CMD...

Every 0.2 s: seconds since start, the command's CPU so far (user+sys, /proc/PID/stat), its RSS
(VmRSS, KiB) and how many lines it has written to STDOUT_FILE (with `push --json`: mirrors that
have answered). At the end one line on stdout: `wall_s cpu_s maxrss_kib exit_code`, the CPU and
peak RSS from wait4(2), like examples/rusage.rs.
"""
import os
import sys
import time


def sample(pid, clk):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / clk  # utime, stime
        rss = 0
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
        return cpu, rss
    except (OSError, IndexError, ValueError):
        return None


def main():
    if len(sys.argv) < 5 or sys.argv[3] != "--":
        sys.exit(__doc__)
    samples_path, stdout_path, cmd = sys.argv[1], sys.argv[2], sys.argv[4:]
    clk = os.sysconf("SC_CLK_TCK")
    start = time.monotonic()
    with open(stdout_path, "wb") as out:
        pid = os.fork()
        if pid == 0:
            os.dup2(out.fileno(), 1)
            os.execvp(cmd[0], cmd)
    with open(samples_path, "w") as samples:
        samples.write("t_s\tcpu_s\trss_kib\tlines\n")
        while True:
            done, status, usage = os.wait4(pid, os.WNOHANG)
            if done:
                break
            s = sample(pid, clk)
            if s:
                with open(stdout_path, "rb") as f:
                    lines = f.read().count(b"\n")
                samples.write(f"{time.monotonic() - start:.2f}\t{s[0]:.2f}\t{s[1]}\t{lines}\n")
            time.sleep(0.2)
    wall = time.monotonic() - start
    code = os.waitstatus_to_exitcode(status)
    print(f"{wall:.3f} {usage.ru_utime + usage.ru_stime:.3f} {usage.ru_maxrss} {code}")


if __name__ == "__main__":
    main()
