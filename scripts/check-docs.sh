#!/usr/bin/env bash
# check-docs.sh: fail when a tracked file cites the team's internal design notes, which users
# do not have: the file named DESIGN plus ".md", or the word DESIGN followed by a section number.
# Shipped text states the rule itself or points to a README section. Benchmark result
# archives (benches/results/) are records of past runs and are exempt. The patterns below are
# written so that this file does not match them.
# Prints one line per hit (file:line:text) and exits 1; quiet and 0 when there is none;
# exit 2 when it cannot run (not a git checkout).
set -euo pipefail
cd "$(dirname "$0")/.."

git rev-parse --is-inside-work-tree >/dev/null 2>&1 || {
    echo "check-docs: not a git checkout: $(pwd)" >&2; exit 2; }

# git grep: 0 = hits, 1 = none, anything else = an error that must not pass as "none".
search() {
    local rc=0
    git grep -n -I "$@" -- . ':(exclude)benches/results/' || rc=$?
    [ "$rc" -le 1 ] || { echo "check-docs: git grep failed ($rc)" >&2; exit 2; }
}
hits=$(
    {
        search -i -e 'design[.]md'
        search -E -e 'DESIGN[[:space:]]+(section|sections|§)'
    } | sort -t: -k1,1 -k2,2n -u
)
if [ -n "$hits" ]; then
    printf '%s\n' "$hits"
    echo "error: the lines above cite the internal design notes; state the rule or point to README.md" >&2
    exit 1
fi
