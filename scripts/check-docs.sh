#!/usr/bin/env bash
# check-docs.sh: fail when a tracked file cites the team's internal design notes, which users
# do not have: the file named DESIGN plus ".md", or "DESIGN section N". Shipped text states the
# rule itself or points to a README section. Benchmark result archives (benches/results/) are
# records of past runs and are exempt. The patterns below are written so that this file does
# not match them.
# Prints one line per hit (file:line:text) and exits 1; quiet and 0 when there is none.
set -euo pipefail
cd "$(dirname "$0")/.."

hits=$(
    {
        git grep -n -I -i -e 'design[.]md' -- . ':(exclude)benches/results/' || true
        git grep -n -I -E -e 'DESIGN[[:space:]]+(section|sections|§)' -- . ':(exclude)benches/results/' || true
    } | sort -t: -k1,1 -k2,2n -u
)
if [ -n "$hits" ]; then
    printf '%s\n' "$hits"
    echo "error: the lines above cite the internal design notes; state the rule or point to README.md" >&2
    exit 1
fi
