#!/usr/bin/env python3
"""How long a detach-mode module stays busy after an accepted push: from exec of the handler
(as sshd runs it) until the detached runner has run rsync, recorded status and released the
module lock. A push arriving inside that window is answered "queued" (and coalesced), so the
window is the handler's own overhead on top of rsync.

    benches/runner-cycle.py [HANDLER_BIN] [RUNS]       (default target/release/mirrorpush-handler, 30)

The module's source is a small local tree, so rsync itself takes a few ms; rsync's own time is
read from the run's status.json (duration_ms covers the batch) and reported beside the cycle.
"""
import fcntl, json, os, statistics, subprocess, sys, tempfile, time

handler = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/mirrorpush-handler")
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 30

with tempfile.TemporaryDirectory(prefix="runner-cycle-") as tmp:
    src, dest, state = (os.path.join(tmp, d) for d in ("src", "dest", "state"))
    for d in (src + "/a/b", dest, state):
        os.makedirs(d)
    for i in range(20):
        with open(f"{src}/a/b/f{i}", "w") as f:
            f.write("x" * 100)
    cfg = os.path.join(tmp, "handler.toml")
    with open(cfg, "w") as f:
        f.write(f'state_dir = "{state}"\n[modules.m]\nsource = "{src}/"\ndest = "{dest}"\nmode = "detach"\n')
    env = dict(os.environ, SSH_CONNECTION="127.0.0.1 40000 127.0.0.1 22", SSH_ORIGINAL_COMMAND="sync m")
    lock_path, status_path = f"{state}/m/lock", f"{state}/m/status.json"
    cycles, batches = [], []
    for _ in range(runs):
        before = os.stat(status_path).st_mtime_ns if os.path.exists(status_path) else 0
        t0 = time.perf_counter()
        out = subprocess.run([handler, "--config", cfg], env=env, capture_output=True, text=True)
        assert out.stdout.strip() == "accepted", (out.stdout, out.stderr)
        # The runner has finished its batch once status.json is rewritten; then wait for the lock.
        while not (os.path.exists(status_path) and os.stat(status_path).st_mtime_ns != before):
            time.sleep(0.0005)
        with open(lock_path) as lf:
            while True:
                try:
                    fcntl.flock(lf, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    time.sleep(0.0005)
            t1 = time.perf_counter()
            fcntl.flock(lf, fcntl.LOCK_UN)
        cycles.append((t1 - t0) * 1000)
        with open(status_path) as f:
            batches.append(json.load(f)["duration_ms"])
    print(f"handler: {handler}")
    print(f"runs: {runs}")
    print(f"accepted -> module idle, ms: median {statistics.median(cycles):.1f}, "
          f"min {min(cycles):.1f}, max {max(cycles):.1f}")
    print(f"rsync batch (status.json duration_ms): median {statistics.median(batches):.0f}")
