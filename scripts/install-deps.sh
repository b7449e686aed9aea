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
# The bus tests: the lab's own RabbitMQ node, Debian's MTA for the mail-alias path, and a
# Python venv for the real fedora-messaging client (below).
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need+=(rabbitmq-server)
[ -x /usr/sbin/exim4 ] || need+=(exim4-daemon-light)
# The lab's TLS broker: a CA and certificates made at test time with the openssl CLI.
command -v openssl >/dev/null || need+=(openssl)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
# The propagation tests: mirrors' public trees served by nginx (started by the lab as an
# unprivileged process, never as the system service), the HTML report rendered by chromium.
[ -x /usr/sbin/nginx ] || need+=(nginx)
[ -x /usr/lib/chromium/chromium ] || need+=(chromium fonts-dejavu-core)
if [ "${1:-}" = "--units" ]; then
    command -v systemd-analyze >/dev/null || need+=(systemd)
fi
if [ ${#need[@]} -gt 0 ]; then
    echo "==> installing ${need[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: ${need[*]} missing and not root: install them first" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The real fedora-messaging client (PyPI) for the Fedora interop test, in a venv under target/
# (tests/bus_listen.rs looks for it there; MIRRORPUSH_BUS_VENV overrides).
venv=${MIRRORPUSH_BUS_VENV:-"$(cd "$(dirname "$0")/.." && pwd)/target/bus-venv"}
if ! "$venv/bin/python" -c 'import fedora_messaging' 2>/dev/null; then
    echo "==> installing fedora-messaging into $venv"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check 'fedora-messaging>=3.4,<4'
fi
