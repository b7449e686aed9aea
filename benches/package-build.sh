#!/usr/bin/env bash
# package-build.sh: how long `scripts/build-deb.sh` takes from a clean checkout, as a packager
# runs it: a fresh copy of HEAD (git archive) with an empty target dir; crates come from the
# local cargo cache (a build machine that has fetched once). Prints the elapsed seconds at each
# step of the script, the total, the machine's cores and its load average before and after
# (other work on the machine slows the build; the figures are only as quiet as the machine).
# Needs cargo-deb (`cargo install cargo-deb --locked`).
#   benches/package-build.sh
set -euo pipefail
cd "$(dirname "$0")/.."
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
