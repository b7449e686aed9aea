#!/usr/bin/env bash
# What one file-list entry costs, to size the handler's `max_list_size` and `max_list_entries`
# defaults: the real generator (`mirrorpush filelist`) over two trees built from the real
# package index of this machine's apt lists (Debian bookworm main amd64: every package's path
# and size), as sparse files (right sizes, no disk):
#   debian: the archive's own layout, `pool/main/p/python3-requests/python3-requests_2.28.1-1_all.deb`
#   fedora: the same packages in Fedora's layout,
#           `linux/releases/41/Everything/x86_64/os/Packages/p/python3-requests-2.28.1-1.fc41.x86_64.rpm`
# plus each tree's dirs. Prints bytes per entry and what 12 million entries (Fedora's largest
# list, by the issue's figure) would take.
#
#   benches/list-entry-size.sh            # MIRRORPUSH=path/to/mirrorpush to pick the binary
#
# Markdown table on stdout; trees and lists under target/bench/list-entry-size/<time>/.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

bench_outdir list-entry-size
BIN=${MIRRORPUSH:-target/debug/mirrorpush}
[ -x "$BIN" ] || cargo build --quiet --bin mirrorpush
INDEX=$(ls -S /var/lib/apt/lists/*_dists_*_main_binary-amd64_Packages* 2>/dev/null | head -1)
[ -n "$INDEX" ] || { echo "no apt package index: run apt-get update" >&2; exit 1; }
/usr/lib/apt/apt-helper cat-file "$INDEX" | awk '
    /^Package: /  { p = $2 }
    /^Version: /  { v = $2 }
    /^Architecture: / { a = $2 }
    /^Size: /     { s = $2 }
    /^Filename: / { f = $2 }
    /^$/ { if (f != "") print p "\t" v "\t" a "\t" s "\t" f; p = v = a = s = f = "" }
' >"$OUT/packages.tsv"
echo "index: $INDEX ($(wc -l <"$OUT/packages.tsv") packages)" >>"$OUT/env.txt"

python3 - "$OUT" <<'EOF'
import os, sys
out = sys.argv[1]
arch = {"amd64": "x86_64", "all": "noarch", "i386": "i686"}
for layout in ("debian", "fedora"):
    root = os.path.join(out, layout)
    for line in open(os.path.join(out, "packages.tsv")):
        name, version, a, size, filename = line.rstrip("\n").split("\t")
        if layout == "debian":
            rel = filename
        else:
            v = version.split(":")[-1].replace("~", "_")
            rel = "linux/releases/41/Everything/%s/os/Packages/%s/%s-%s.fc41.%s.rpm" % (
                arch.get(a, a), name[0].lower(), name, v, arch.get(a, a))
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.truncate(int(size))
EOF

{
    echo "| tree | entries | list bytes | bytes per entry | 12M entries would take |"
    echo "|---|---:|---:|---:|---:|"
    for layout in debian fedora; do
        "$BIN" filelist --output "$OUT/$layout.list" "$OUT/$layout" >/dev/null
        entries=$(awk -F'\t' '/^\[Files\]/{on=1; next} /^\[/{on=0} on && NF==4' "$OUT/$layout.list" | wc -l)
        bytes=$(stat -c %s "$OUT/$layout.list")
        python3 -c "
e, b = $entries, $bytes
print(f'| $layout | {e} | {b} | {b / e:.1f} | {b / e * 12e6 / 1e9:.2f} GB |')"
    done
} | tee "$OUT/summary.md"
rm -rf "$OUT/debian" "$OUT/fedora"
