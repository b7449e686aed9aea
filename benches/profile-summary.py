#!/usr/bin/env python3
"""Markdown from benches/fanout-profile.sh: each function's own instructions (callgrind's Ir,
from `callgrind_annotate` without --inclusive) put in buckets by the crate or library the
symbol belongs to, per mirror, at each fleet size; then the functions whose instructions per
mirror grow most from the smallest to the largest size.

    profile-summary.py OUTDIR N1 N2 ...
"""
import re
import sys
from collections import defaultdict
from pathlib import Path

# First match wins: (bucket, regex on the symbol as callgrind_annotate prints it).
BUCKETS = [
    ("key exchange: ML-KEM-768 (hybrid kex)", r"ml_kem|module_lattice|keccak|hybrid_array"),
    ("key exchange: X25519", r"montgomery|x25519"),
    ("signatures: ed25519 (host key, user auth)", r"ed25519|edwards|AffineNielsPoint|LookupTable|curve_models|scalar::|EdwardsPoint"),
    ("curve25519 field arithmetic (X25519 and ed25519)", r"curve25519"),
    ("hashes (sha2, sha1, hmac)", r"\bsha2::|sha1|hmac|sha256|sha512|digest::"),
    ("ciphers and MACs", r"chacha|ChaCha|poly1305|aes|ctr::|ghash|cipher::|universal_hash"),
    ("other crypto (ring, subtle, zeroize)", r"ring_core|ring::|crypto_bigint|num_bigint|subtle::|zeroize|elliptic|p256|p384|rsa::"),
    ("russh and ssh-key", r"russh|ssh_key|ssh_encoding|internal_russh"),
    ("tokio runtime", r"tokio::|mio::|parking_lot|futures|poll_fn"),
    ("our code", r"mirrorpush::|fanout::|history::"),
    ("history database (sqlite)", r"rusqlite|sqlite3|libsqlite|balance_nonroot|wal[A-Z]|Btree|Vdbe|Pager|getPage"),
    ("registry and report (toml, serde)", r"toml|serde"),
    ("logging (tracing)", r"tracing"),
    ("allocation", r"malloc|free|realloc|calloc|alloc::|_int_|memalign"),
    ("memcpy and libc", r"mem(cpy|move|set|cmp)|libc|ld-linux|__GI_|_dl_|strlen"),
]

LINE = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)$")


def parse(path):
    costs = {}
    for line in path.read_text(errors="replace").splitlines():
        m = LINE.match(line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        ir = int(m.group(1).replace(",", ""))
        sym = m.group(2)
        # "file:function [object]": keep the function and the object.
        if ":" in sym:
            sym = sym.split(":", 1)[1]
        costs[sym] = costs.get(sym, 0) + ir
    return costs


def bucket(sym):
    for name, rx in BUCKETS:
        if re.search(rx, sym):
            return name
    return "other"


def total(path):
    for line in path.read_text(errors="replace").splitlines():
        if "PROGRAM TOTALS" in line:
            return int(line.split()[0].replace(",", ""))
    return None


out = Path(sys.argv[1])
sizes = [int(n) for n in sys.argv[2:]]
per = {}
for n in sizes:
    costs = parse(out / f"self-N{n}.txt")
    b = defaultdict(int)
    for sym, ir in costs.items():
        b[bucket(sym)] += ir
    per[n] = (total(out / f"self-N{n}.txt"), b, costs)

names = [name for name, _ in BUCKETS] + ["other"]
print("Instructions per mirror (callgrind Ir of the master / N), each function's own, by bucket:\n")
print("| bucket | " + " | ".join(f"N={n}: k Ir per mirror | share" for n in sizes) + " |")
print("|---|" + "---|---|" * len(sizes))
for name in names:
    cells = []
    for n in sizes:
        tot, b, _ = per[n]
        cells.append(f"{b.get(name, 0) / n / 1000:.0f} | {100 * b.get(name, 0) / tot:.1f}%")
    print(f"| {name} | " + " | ".join(cells) + " |")
cells = [f"{per[n][0] / n / 1000:.0f} | 100%" for n in sizes]
print("| **total** | " + " | ".join(cells) + " |")

if len(sizes) >= 2:
    lo, hi = sizes[0], sizes[-1]
    clo, chi = per[lo][2], per[hi][2]
    growth = []
    for sym in set(clo) | set(chi):
        d = chi.get(sym, 0) / hi - clo.get(sym, 0) / lo
        growth.append((d, sym))
    growth.sort(reverse=True)
    print(f"\nFunctions whose own instructions per mirror grew most from N={lo} to N={hi}:\n")
    print(f"| function | N={lo}: Ir per mirror | N={hi}: Ir per mirror |")
    print("|---|---|---|")
    for d, sym in growth[:12]:
        if d <= 0:
            break
        short = sym if len(sym) < 110 else sym[:107] + "..."
        short = short.replace("|", "\\|")
        print(f"| `{short}` | {clo.get(sym, 0) / lo:.0f} | {chi.get(sym, 0) / hi:.0f} |")
