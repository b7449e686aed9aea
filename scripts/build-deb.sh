#!/usr/bin/env bash
# build-deb.sh: builds both Debian packages into target/debian/:
#   mirrorpush_<version>-1_<arch>.deb          master and mirror (both programs)
#   mirrorpush-handler_<version>-1_<arch>.deb  mirror only (the handler without the SSH stack)
# Needs cargo-deb (`cargo install cargo-deb --locked`). One release build serves both the
# programs and the man page/completion generator (the workspace member assets/), so the
# generator costs little more than its own small crate; the handler-only variant then rebuilds
# just the handler's few dependencies without the master's. `--skip-handler` builds only the
# first package.
set -euo pipefail
cd "$(dirname "$0")/.."

variant=yes
case "${1:-}" in
    --skip-handler) variant=no ;;
    "") ;;
    *) echo "usage: scripts/build-deb.sh [--skip-handler]" >&2; exit 2 ;;
esac
cargo deb --version >/dev/null 2>&1 || {
    echo "error: cargo-deb is missing: cargo install cargo-deb --locked" >&2; exit 2; }

echo "==> release build: mirrorpush, mirrorpush-handler and the asset generator"
cargo build --release --locked -p mirrorpush -p mirrorpush-assets --bins
echo "==> man pages and completions into target/assets/"
target/release/mirrorpush-assets target/assets
echo "==> target/debian/mirrorpush_*.deb"
cargo deb --no-build --locked -p mirrorpush
if [ "$variant" = yes ]; then
    echo "==> target/debian/mirrorpush-handler_*.deb (the handler built without the master's features)"
    cargo build --release --locked -p mirrorpush --no-default-features --bin mirrorpush-handler
    cargo deb --no-build --locked -p mirrorpush --variant handler
fi
ls -l target/debian/*.deb
