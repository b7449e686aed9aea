#!/usr/bin/env bash
# verify-units.sh: check every unit in systemd/ with `systemd-analyze verify`,
# hold every service to an exposure ceiling with `systemd-analyze security`,
# and run the push unit's optional list step against a stub.
#
# Usage: scripts/verify-units.sh [-v] [BINDIR] [INSTANCE]
#   -v        also print one line per unit and every service's exposure score.
#   BINDIR    optional directory holding built mirrorpush, mirrorpush-handler and mirrorpush-listen
#             (e.g. target/release); they are copied into the temp root so the
#             ExecStart= check runs against the real binaries. Without it, stub
#             executables stand in for them.
#   INSTANCE  template instance to verify (default: fedora).
# Quiet on success. Exit status: 0 clean; 1 any warning or error about our
# units, an exposure above the ceiling, or a wrong list step; 2 usage/setup.
#
# How it works (and why): `systemd-analyze verify` refuses a unit whose
# ExecStart= binary does not exist, and we must not install anything into /usr
# on a build machine. systemd-analyze (>= 250) accepts --root=DIR for `verify`
# and `security --offline=yes`, resolving unit search paths *and* ExecStart=
# paths inside DIR. So we build a throw-away root:
#   DIR/usr/{bin,sbin,lib}, DIR/{bin,lib,sbin} -> usr/...   (merged /usr)
#   DIR/usr/lib/systemd/system   = host's stock units (sysinit.target,
#                                  network-online.target, ...) + ours
#   DIR/usr/bin/{mirrorpush,mirrorpush-handler,mirrorpush-listen,rm,sh} = BINDIR copies or stubs
# then verify each template through a concrete instance (a template alone
# cannot be verified: %i would be empty). `--recursive-errors=no` makes the exit
# status reflect warnings about the named unit only (not about the host's stock
# units); in addition any diagnostic line naming a mirrorpush unit counts as a
# failure, because some warnings ("Unknown key ... ignoring") are printed
# without changing the exit status on some systemd versions.
# Works as root or not, with or without systemd as PID 1 (no D-Bus is used).
# Generators are not run and man pages are not checked (--man=no: the man pages
# live in the package, not on the build machine).
set -euo pipefail

# Most exposure `systemd-analyze security` may give any of our services, in
# tenths (15 = 1.5, "OK"; systemd 252 rates push 1.4, sync and fullsync 1.5).
# Lower it when a unit gets tighter; never raise it to let a unit through.
max_exposure=15

verbose=0
if [ "${1:-}" = -v ]; then verbose=1; shift; fi
here=$(cd "$(dirname "$0")/.." && pwd)
units_dir="$here/systemd"
bindir=${1:-}
instance=${2:-fedora}
say() { if [ "$verbose" = 1 ]; then echo "$@"; fi; }

command -v systemd-analyze >/dev/null 2>&1 || {
    echo "verify-units: systemd-analyze not found (apt-get install systemd)" >&2; exit 2; }
stock=/usr/lib/systemd/system
[ -d "$stock" ] || stock=/lib/systemd/system
[ -e "$stock/sysinit.target" ] || {
    echo "verify-units: no stock systemd units found in $stock" >&2; exit 2; }

root=$(mktemp -d "${TMPDIR:-/tmp}/verify-units.XXXXXX")
trap 'rm -rf "$root"' EXIT
trap 'exit 130' INT TERM
mkdir -p "$root/usr/bin" "$root/usr/sbin" "$root/usr/lib/systemd" "$root/etc/systemd/system"
ln -s usr/bin "$root/bin"; ln -s usr/lib "$root/lib"; ln -s usr/sbin "$root/sbin"
cp -R "$stock" "$root/usr/lib/systemd/system"

stub() { printf '#!/bin/sh\nexit 0\n' >"$root/usr/bin/$1"; chmod 755 "$root/usr/bin/$1"; }
for b in mirrorpush mirrorpush-handler mirrorpush-listen; do
    if [ -n "$bindir" ]; then
        [ -x "$bindir/$b" ] || { echo "verify-units: $bindir/$b missing or not executable" >&2; exit 2; }
        cp "$bindir/$b" "$root/usr/bin/$b"
    else
        stub "$b"
    fi
done
stub rm   # ExecStartPre=+/bin/rm in mirrorpush-push@.service
stub sh   # ExecStartPre=/bin/sh -c '...' (the list step) in the same unit

units=()
for f in "$units_dir"/*.service "$units_dir"/*.path "$units_dir"/*.timer "$units_dir"/*.socket; do
    [ -e "$f" ] && units+=("${f##*/}")
done
[ ${#units[@]} -gt 0 ] || { echo "verify-units: no units in $units_dir" >&2; exit 2; }
for u in "${units[@]}"; do cp "$units_dir/$u" "$root/usr/lib/systemd/system/$u"; done

instance_of() {
    case $1 in
        *@.*) echo "${1%%@.*}@$instance.${1##*@.}" ;;
        *)    echo "$1" ;;
    esac
}

fail=0
for u in "${units[@]}"; do
    name=$(instance_of "$u")
    out=$(systemd-analyze verify --man=no --recursive-errors=no --root="$root" "$name" 2>&1) && rc=0 || rc=$?
    noise=$(printf '%s\n' "$out" | grep -i 'mirrorpush' || true)
    if [ "$rc" -ne 0 ] || [ -n "$noise" ]; then
        echo "FAIL $u (as $name, exit $rc):"; printf '%s\n' "$out" | sed 's/^/    /'
        fail=1
    else
        say "ok   $u (as $name)"
    fi
done

# Exposure: lower is better; --threshold fails a service rated above the ceiling.
for u in "${units[@]}"; do
    case $u in *.service) ;; *) continue ;; esac
    name=$(instance_of "$u")
    out=$(systemd-analyze security --offline=yes --root="$root" --threshold="$max_exposure" "$name" 2>&1) \
        && rc=0 || rc=$?
    score=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for [^:]*: //p')
    if [ "$rc" -ne 0 ]; then
        echo "FAIL $u: exposure ${score:-unknown} is above the ceiling of $max_exposure/10 (exit $rc)"
        fail=1
    else
        say "     security $name: $score"
    fi
done

# The push unit's list step (ExecStartPre=/bin/sh -c '...'): its shell text
# with systemd's "$$" unescaped, /usr/bin/mirrorpush replaced by a stub that
# records its arguments, run without, with an empty and with a set
# FILELIST_TREE. (systemd's own parsing of the line is covered by `verify`.)
line=$(sed -n "s/^ExecStartPre=\/bin\/sh -c '\(.*\)'\$/\1/p" "$units_dir/mirrorpush-push@.service")
if [ -z "$line" ]; then
    echo "FAIL mirrorpush-push@.service: no ExecStartPre=/bin/sh -c '...' list step found"
    fail=1
else
    script=${line//\$\$/\$}
    rec="$root/filelist.args"
    printf '#!/bin/sh\nprintf "%%s|" "$@" >"%s"\n' "$rec" >"$root/mirrorpush-stub"
    chmod 755 "$root/mirrorpush-stub"
    script=${script//\/usr\/bin\/mirrorpush /$root/mirrorpush-stub }
    check_step() {  # expected-args-or-empty, then env assignments
        local want=$1; shift
        rm -f "$rec"
        if ! env -i PATH=/usr/bin:/bin "$@" /bin/sh -c "$script"; then
            echo "FAIL mirrorpush-push@.service list step with '$*': exited non-zero"; fail=1; return
        fi
        local got=""
        [ -e "$rec" ] && got=$(cat "$rec")
        if [ "$got" != "$want" ]; then
            echo "FAIL mirrorpush-push@.service list step with '$*': ran '${got:-nothing}', want '${want:-nothing}'"
            fail=1
        fi
    }
    check_step ""
    check_step "" FILELIST_TREE=
    check_step "filelist|/srv/pub/my tree|" "FILELIST_TREE=/srv/pub/my tree"
    check_step "filelist|--checksum|repomd.xml|/srv/pub/*|" "FILELIST_TREE=/srv/pub/*" \
        "FILELIST_ARGS=--checksum  repomd.xml"
    [ "$fail" = 1 ] || say "ok   mirrorpush-push@.service list step"
fi

exit $fail
