#!/usr/bin/env bash
# Runs every check and test of mirrorpush: the README's test command, and what .ci/run calls.
# On a fresh Debian machine as root it first installs what the test lab needs (openssh-server, rsync).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh --units

echo "==> cargo fmt --check"
cargo fmt --check
echo "==> cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
# (The step's name avoids the file name it checks for, which would flag this line.)
echo "==> no shipped file cites the internal design notes"
scripts/check-docs.sh
echo "==> the handler builds without tokio, russh or the AMQP client"
cargo build --quiet --no-default-features --bin mirrorpush-handler
for crate in tokio russh clap amqprs; do
    if [ -n "$(cargo tree --no-default-features -e normal -i "$crate" 2>/dev/null)" ]; then
        echo "error: the handler build pulls in $crate" >&2
        exit 1
    fi
done
if [ -x scripts/verify-units.sh ]; then
    echo "==> systemd units"
    scripts/verify-units.sh
fi
echo "==> the demo (debug build), so that the README's first command stays working"
cargo build --quiet --bins --examples
demo_log=$(mktemp)
target/debug/examples/demo >"$demo_log" 2>&1 || { cat "$demo_log"; rm -f "$demo_log"; exit 1; }
tail -n 1 "$demo_log"
rm -f "$demo_log"
echo "==> cargo test"
cargo test --workspace --all-targets
