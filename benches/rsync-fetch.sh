#!/usr/bin/env bash
# Where a file-list null run's wall time goes: the fetch of one unchanged file from an
# `rsync --daemon` on loopback, as the handler runs it (`rsync -t --stats URL FILE`; rsync's
# quick check skips the unchanged file), with and without TCP_NODELAY on the daemon's socket
# (`socket options = TCP_NODELAY` in rsyncd.conf) and on the client's (`--sockopts=TCP_NODELAY`).
# RUNS_FETCH (default 30) timed runs after 3 untimed ones per combination.
#
#   benches/rsync-fetch.sh [FILE]     # FILE: what to serve (default: 6.6 MB of text)
#
# Markdown table on stdout; raw times under target/bench/rsync-fetch/<time>/.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

bench_outdir rsync-fetch
DIR=$OUT/srv
mkdir -p "$DIR/m" "$DIR/dst"
if [ -n "${1:-}" ]; then
    cp "$1" "$DIR/m/list"
else
    python3 -c "import sys; sys.stdout.write(''.join(f'1795623127\tf\t{i % 4}\tarch0/group{i // 5000:02}/pkg{i // 100 % 50:02}/name-{i % 100:03}-1.0-1.fc41.x86_64.rpm\n' for i in range(100000)))" >"$DIR/m/list"
fi
echo "served: $(stat -c %s "$DIR/m/list") bytes; rsync: $(rsync --version | head -1)" >>"$OUT/env.txt"
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
for v in default nodelay; do
    {
        echo "use chroot = no"
        [ "$(id -u)" = 0 ] && printf 'uid = 0\ngid = 0\n'
        [ $v = nodelay ] && echo "socket options = TCP_NODELAY"
        printf '[m]\npath = %s\n' "$DIR/m"
    } >"$DIR/$v.conf"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    rsync --daemon --no-detach --config="$DIR/$v.conf" --port="$port" --address=127.0.0.1 &
    PIDS+=($!)
    declare "PORT_$v=$port"
done
sleep 0.5
rsync -t "rsync://127.0.0.1:$PORT_default/m/list" "$DIR/dst/list"
python3 - "$OUT" "$PORT_default" "$PORT_nodelay" "${RUNS_FETCH:-30}" <<'EOF' | tee "$OUT/summary.md"
import statistics, subprocess, sys, time
out, pd, pn, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
print("| daemon socket | client socket | runs | wall ms median (min-max) |")
print("|---|---|---|---|")
with open(f"{out}/raw.tsv", "w") as raw:
    for port, daemon in ((pd, "default"), (pn, "TCP_NODELAY")):
        for extra, client in (([], "default"), (["--sockopts=TCP_NODELAY"], "TCP_NODELAY")):
            cmd = ["rsync", "-t", "--stats", *extra, f"rsync://127.0.0.1:{port}/m/list", f"{out}/srv/dst/list"]
            xs = []
            for i in range(runs + 3):
                s = time.perf_counter()
                subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
                if i >= 3:
                    xs.append((time.perf_counter() - s) * 1000)
                    raw.write(f"{daemon} {client} {xs[-1]:.3f}\n")
            print(f"| {daemon} | {client} | {runs} | {statistics.median(xs):.1f} ({min(xs):.1f}-{max(xs):.1f}) |")
EOF
