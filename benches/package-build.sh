#!/usr/bin/env bash
# package-build.sh: how long `scripts/build-deb.sh` takes from a clean checkout, as a packager
# runs it: a fresh copy of HEAD (git archive) with an empty target dir; crates come from the
# local cargo cache (a build machine that has fetched once). Prints the elapsed seconds at each
# step of the script, the total, the machine's cores and its load average before and after
# (other work on the machine slows the build; the figures are only as quiet as the machine).
# Needs cargo-deb (`cargo install cargo-deb --locked`).
#   benches/package-build.sh            # the timed build
#   KEEP=target/debian benches/package-build.sh   # ... and keep the two .deb files there
#   benches/package-build.sh --crates   # only what the man page generator builds beyond the
#                                       # programs (no build, a few seconds)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--crates" ]; then
    crates() { cargo tree "$@" --prefix none 2>/dev/null | sed 's/ (\*)//' | sort -u; }
    programs=$(crates -p mirrorpush -e normal)
    example=$(crates -p mirrorpush -e normal,dev)
    assets=$(crates -p mirrorpush-assets -e normal)
    extra() { comm -13 <(printf '%s\n' "$programs") <(printf '%s\n' "$1") | grep -c .; }
    echo "crates of the release programs: $(printf '%s\n' "$programs" | grep -c .)"
    echo "examples/gen-assets.rs as an example (debug build, every dev-dependency): all of them" \
        "again in debug, plus $(extra "$example") more"
    echo "assets/ (mirrorpush-assets, in the programs' release build): $(extra "$assets") more:" \
        "$(comm -13 <(printf '%s\n' "$programs") <(printf '%s\n' "$assets") | cut -d' ' -f1 | tr '\n' ' ')"
    exit 0
fi
keep=${KEEP:+$(realpath -m "$KEEP")}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git archive HEAD | tar -x -C "$work"
cd "$work"
echo "commit: $(git -C "$OLDPWD" rev-parse --short HEAD); cores: $(nproc); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
start=$(date +%s)
scripts/build-deb.sh 2>&1 | while IFS= read -r line; do
    case "$line" in
        "==> "* | *.deb) printf '%5ds  %s\n' "$(( $(date +%s) - start ))" "$line" ;;
    esac
done
total=$(( $(date +%s) - start ))
printf 'total: %dm%02ds (%d s); load after: %s\n' $((total / 60)) $((total % 60)) "$total" "$(cut -d' ' -f1-3 /proc/loadavg)"
# The CPU the build's processes used (user and system, summed over every compiler process):
# unlike the wall time, it does not grow with other work on the machine. Divided by the cores
# it is the least wall time this build can take on an idle machine of this kind.
# `times`' second line: the children's user and system time, as "XmY.ZZZs XmY.ZZZs".
times >"$work/times"   # a builtin in this shell: a pipe or $(...) would ask a fresh subshell
cpu=$(sed -n 2p "$work/times" | awk '{ n = 0; for (i = 1; i <= 2; i++) { split($i, t, /[ms]/); n += t[1] * 60 + t[2] } printf "%d", n }')
echo "cpu: ${cpu} s (user+sys of every build process); / $(nproc) cores: $((cpu / $(nproc))) s"
if [ -n "$keep" ]; then
    mkdir -p "$keep" && cp target/debian/*.deb "$keep/" && echo "kept: $(ls "$keep"/*.deb | tr '\n' ' ')"
fi
