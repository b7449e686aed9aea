#!/usr/bin/env bash
# The built-in local demo: installs what is missing (openssh-server, rsync), builds, and pushes to
# three mirrors on loopback, each a real sshd forcing mirrorpush-handler. Leaves no process behind.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
echo "==> building (release)"
cargo build --quiet --release --bins --examples
exec target/release/examples/demo
