#!/bin/sh
# Idempotent set-up for a fresh Debian bookworm machine, run as root:
# Debian packages (etcd, dbus, systemd headers, promtool), then a virtualenv at .venv/
# with locksmithd installed in editable mode plus its test extras.
set -eu
cd "$(dirname "$0")/.."

need_pkgs=""
# prometheus: for promtool, which tests contrib/prometheus/alerts.yml (about 19 MB).
pkgs="etcd-server etcd-client dbus libsystemd-dev pkg-config iproute2 python3-venv systemd prometheus"
# make deb (contrib/build-deb.sh): debhelper, dh-python with its pyproject plugin, python3-click
# (the completions are printed by locksmithctl at build time), lintian (tests/test_deb.py) and
# groff (tests/test_rendered_docs.py reads the man pages with it).
pkgs="$pkgs debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools python3-wheel python3-click lintian groff-base"
# --e2e: what `make e2e` adds: mmdebstrap builds the hosts' roots, systemd-nspawn boots them.
if [ "${1:-}" = "--e2e" ]; then
    pkgs="mmdebstrap systemd-container util-linux"
fi
for pkg in $pkgs; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_pkgs="$need_pkgs $pkg"
done
if [ -n "$need_pkgs" ]; then
    echo "bootstrap: installing Debian packages:$need_pkgs"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $need_pkgs >/dev/null
fi

if [ "${1:-}" = "--e2e" ]; then
    exit 0
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "bootstrap: creating .venv"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.locksmithd-installed
if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "bootstrap: installing locksmithd into .venv"
    .venv/bin/pip install -q --disable-pip-version-check --upgrade pip setuptools wheel
    .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
    touch "$stamp"
fi
