#!/bin/sh
# verify-units.sh: check every unit in systemd/ with `systemd-analyze verify`
# and print `systemd-analyze security` exposure scores.
#
# Usage: scripts/verify-units.sh [BINDIR] [INSTANCE]
#   BINDIR    optional directory holding built mirrorpush and mirrorpush-handler
#             (e.g. target/release); they are copied into the temp root so the
#             ExecStart= check runs against the real binaries. Without it, stub
#             executables stand in for them.
#   INSTANCE  template instance to verify (default: fedora).
# Exit status: 0 clean; 1 any warning or error about our units; 2 usage/setup.
#
# How it works (and why): `systemd-analyze verify` refuses a unit whose
# ExecStart= binary does not exist, and we must not install anything into /usr
# on a build machine. systemd-analyze (>= 250) accepts --root=DIR for `verify`
# and `security --offline=yes`, resolving unit search paths *and* ExecStart=
# paths inside DIR. So we build a throw-away root:
#   DIR/usr/{bin,sbin,lib}, DIR/{bin,lib,sbin} -> usr/...   (merged /usr)
#   DIR/usr/lib/systemd/system   = host's stock units (sysinit.target,
#                                  network-online.target, ...) + ours
#   DIR/usr/bin/{mirrorpush,mirrorpush-handler,rm}  = BINDIR copies or stubs
# then verify each template through a concrete instance (a template alone
# cannot be verified: %i would be empty). `--recursive-errors=no` makes the exit
# status reflect warnings about the named unit only (not about the host's stock
# units); in addition any diagnostic line naming a mirrorpush unit counts as a
# failure, because some warnings ("Unknown key ... ignoring") are printed
# without changing the exit status on some systemd versions.
# Works as root or not, with or without systemd as PID 1 (no D-Bus is used).
# Generators are not run and man pages are not checked (--man=no: the man pages
# live in the package, not on the build machine).
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
units_dir="$here/systemd"
bindir=${1:-}
instance=${2:-fedora}

command -v systemd-analyze >/dev/null 2>&1 || {
    echo "verify-units: systemd-analyze not found (apt-get install systemd)" >&2; exit 2; }
stock=/usr/lib/systemd/system
[ -d "$stock" ] || stock=/lib/systemd/system
[ -d "$stock/sysinit.target" ] || [ -f "$stock/sysinit.target" ] || {
    echo "verify-units: no stock systemd units found in $stock" >&2; exit 2; }

root=$(mktemp -d "${TMPDIR:-/tmp}/verify-units.XXXXXX")
trap 'rm -rf "$root"' EXIT INT TERM
mkdir -p "$root/usr/bin" "$root/usr/sbin" "$root/usr/lib/systemd" "$root/etc/systemd/system"
ln -s usr/bin "$root/bin"; ln -s usr/lib "$root/lib"; ln -s usr/sbin "$root/sbin"
cp -R "$stock" "$root/usr/lib/systemd/system"

stub() { printf '#!/bin/sh\nexit 0\n' >"$root/usr/bin/$1"; chmod 755 "$root/usr/bin/$1"; }
for b in mirrorpush mirrorpush-handler; do
    if [ -n "$bindir" ]; then
        [ -x "$bindir/$b" ] || { echo "verify-units: $bindir/$b missing or not executable" >&2; exit 2; }
        cp "$bindir/$b" "$root/usr/bin/$b"
    else
        stub "$b"
    fi
done
stub rm   # ExecStartPre=+/bin/rm in mirrorpush-push@.service

units=$(cd "$units_dir" && ls -1 -- *.service *.path *.timer *.socket 2>/dev/null || true)
[ -n "$units" ] || { echo "verify-units: no units in $units_dir" >&2; exit 2; }
for u in $units; do cp "$units_dir/$u" "$root/usr/lib/systemd/system/$u"; done

fail=0
for u in $units; do
    case $u in
        *@.*) name="${u%%@.*}@$instance.${u##*@.}" ;;
        *)    name=$u ;;
    esac
    out=$(systemd-analyze verify --man=no --recursive-errors=no --root="$root" "$name" 2>&1) && rc=0 || rc=$?
    noise=$(printf '%s\n' "$out" | grep -i 'mirrorpush' || true)
    if [ "$rc" -ne 0 ] || [ -n "$noise" ]; then
        echo "FAIL $u (as $name, exit $rc):"; printf '%s\n' "$out" | sed 's/^/    /'
        fail=1
    else
        echo "ok   $u (as $name)"
    fi
done

# Exposure scores (informational; lower is better, < 2 is "OK").
for u in $units; do
    case $u in *.service) ;; *) continue ;; esac
    name="${u%%@.*}@$instance.service"
    score=$(systemd-analyze security --offline=yes --root="$root" "$name" 2>/dev/null \
            | sed -n 's/.*Overall exposure level for [^:]*: //p')
    echo "     security $name: ${score:-n/a}"
done

exit $fail
