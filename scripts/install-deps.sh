#!/usr/bin/env bash
# Installs what the tests need when it is missing: OpenSSH server and client, rsync, Debian's
# ftpsync (a lab mirror runs the real one), groff (the man page test formats the page), nginx and
# chromium (the propagation tests), and systemd's systemd-analyze with --units, for the unit
# checks. Debian/Ubuntu, as root.
set -euo pipefail
if ! command -v cargo >/dev/null; then
    echo "error: no Rust toolchain: install one with rustup (https://rustup.rs), Rust >= 1.89" >&2
    exit 1
fi
need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
command -v rsync >/dev/null || need+=(rsync)
[ -x /usr/bin/ftpsync ] || need+=(ftpsync)
command -v groff >/dev/null || need+=(groff-base)
# The propagation tests: mirrors' public trees served by nginx (started by the lab as an
# unprivileged process, never as the system service), the HTML report rendered by chromium.
[ -x /usr/sbin/nginx ] || need+=(nginx)
[ -x /usr/lib/chromium/chromium ] || need+=(chromium fonts-dejavu-core)
if [ "${1:-}" = "--units" ]; then
    command -v systemd-analyze >/dev/null || need+=(systemd)
fi
[ ${#need[@]} -eq 0 ] && exit 0
echo "==> installing ${need[*]}"
if [ "$(id -u)" -ne 0 ]; then
    echo "error: ${need[*]} missing and not root: install them first" >&2
    exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
