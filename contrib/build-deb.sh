#!/bin/sh
# make deb: build dist/locksmithd_<version>_all.deb with debhelper and dh-python (pybuild) from the
# packaging sources in contrib/debian/, laid into build/deb/locksmithd-<version>/debian.
# The version is locksmithd/__init__.py's __version__ (setup.cfg reads it too); debian/changelog
# is written here to follow it. Build dependencies: `make setup` (contrib/bootstrap.sh).
set -eu
cd "$(dirname "$0")/.."
# Debian's python3 and tools only: not a virtualenv's or pyenv's python earlier on PATH.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH

version=$(sed -n 's/^__version__ = "\([^"]*\)"$/\1/p' locksmithd/__init__.py)
if [ -z "$version" ]; then
    echo "build-deb: no __version__ = \"...\" line in locksmithd/__init__.py" >&2
    exit 3
fi
# PEP 440 pre-releases sort before the release in Debian with a tilde: 1.0rc1 -> 1.0~rc1.
deb_version=$(printf '%s' "$version" | sed 's/\([0-9]\)\(a\|b\|rc\|\.dev\)\([0-9]\)/\1~\2\3/')
# DEB_VERSION overrides it (the e2e builds an earlier version of the same code to test upgrades).
deb_version=${DEB_VERSION:-$deb_version}
tree="build/deb/locksmithd-$version"
rm -rf build/deb
mkdir -p "$tree" dist

# The package's source: the product and what the package installs (no tests, harness or benchmarks).
tar -cf - --exclude=__pycache__ --exclude='*.egg-info' --exclude=contrib/debian \
    setup.cfg pyproject.toml README.md locksmithd systemd contrib | tar -xf - -C "$tree"
cp -r contrib/debian "$tree/debian"

# The changelog follows __version__; its date (and so the files' times) is the last commit's.
when=$(git log -1 --format=%ct 2>/dev/null || date +%s)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
maintainer=$(sed -n 's/^Maintainer: //p' contrib/debian/control)
cat > "$tree/debian/changelog" <<CHANGELOG
locksmithd ($deb_version) unstable; urgency=medium

  * locksmithd $version, built from commit $commit. The project's changes are
    in its git history and README.

 -- $maintainer  $(date -u -R -d "@$when")
CHANGELOG

(cd "$tree" && dpkg-buildpackage -us -uc -b)
deb="build/deb/locksmithd_${deb_version}_all.deb"
cp "$deb" "dist/locksmithd_${deb_version}_all.deb"
echo "build-deb: dist/locksmithd_${deb_version}_all.deb"
