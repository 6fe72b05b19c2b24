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
# --debian: what `make test-debian` adds: the runtime libraries as the Debian package depends on
# them (bookworm's own versions), for a second virtualenv, .venv-debian/, that sees only those.
if [ "${1:-}" = "--debian" ]; then
    pkgs="$pkgs python3-etcd3 python3-grpcio python3-protobuf python3-dbus-fast python3-click python3-systemd"
    pkgs="$pkgs python3-prometheus-client python3-aiohttp"
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

if [ "${1:-}" = "--debian" ]; then
    # Debian's interpreter and Debian's libraries; from PyPI only the test tools and locksmithd
    # itself (editable, --no-deps), so no pip-installed library can shadow a Debian one.
    if [ ! -x .venv-debian/bin/python ]; then
        echo "bootstrap: creating .venv-debian (Debian's python3 and python3-* packages)"
        /usr/bin/python3 -m venv --system-site-packages .venv-debian
    fi
    stamp=.venv-debian/.locksmithd-installed
    if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        echo "bootstrap: installing locksmithd and the test tools into .venv-debian"
        .venv-debian/bin/pip install -q --disable-pip-version-check --no-deps -e .
        .venv-debian/bin/pip install -q --disable-pip-version-check 'pytest>=7.4' 'hypothesis>=6.90' \
            'trustme>=1.1' 'pytest-timeout>=2.2' 'pytest-xdist>=3.5'
        touch "$stamp"
    fi
    # Fails (and says which) if a runtime library does not come from Debian's packages.
    .venv-debian/bin/python - <<'EOF'
import importlib
for name in ("etcd3", "grpc", "google.protobuf", "dbus_fast", "click", "systemd", "prometheus_client", "aiohttp"):
    where = importlib.import_module(name).__file__ or ""
    if not where.startswith("/usr/lib/python3/dist-packages/"):
        raise SystemExit(f"bootstrap: {name} comes from {where}, not from Debian's packages")
EOF
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
    .venv/bin/pip install -q --disable-pip-version-check -e '.[test,inotify]'
    touch "$stamp"
fi
