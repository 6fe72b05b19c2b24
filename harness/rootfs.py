"""Debian bookworm root filesystems for the real-systemd e2e: built once with mmdebstrap, then cached.

Two layers, each a plain directory under the build directory (``build/e2e`` by
default, ignored by git):

- ``base-<key>/``: bookworm minbase plus systemd, dbus, polkitd, python3 and the
  Debian packages locksmithd's package depends on (read from the built
  package's ``Depends``), made by mmdebstrap from this machine's own apt
  sources (the files under ``/etc/apt/sources.list.d/``, else
  ``/etc/apt/sources.list``). ``key`` hashes the package list and those files,
  so a warm run reuses it and a changed mirror or list builds a new one.
- ``install-<key>/``: the overlay upper directory holding what an operator's
  install adds on top of the base: ``apt-get install ./locksmithd_<version>_all.deb``
  (``make deb``), whose dependencies the base already has, so no download.
  ``key`` hashes what the package holds, so it is rebuilt when the code
  changes (seconds), never the base.

Hosts mount ``install`` over ``base`` with overlayfs and keep their own upper
directory, so a host's files and journal survive its reboots.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("harness.rootfs")

SUITE = "bookworm"
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "polkitd", "python3", "python3-venv")
APT_SOURCES_DIR = Path("/etc/apt/sources.list.d")
APT_SOURCES_LIST = Path("/etc/apt/sources.list")
CLEAN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
             "HOME": "/root"}
_BUILD_TIMEOUT_S = 900
LAYERS_FILE = "layers.json"


class RootfsError(RuntimeError):
    """A layer could not be built; the message names the step and ends with its output."""


@dataclass(frozen=True)
class Packages:
    """``make deb``'s package (``current``) and the same code as an earlier version (``previous``)."""

    previous: Path
    current: Path


@dataclass(frozen=True)
class Layers:
    """The read-only layers of every host, lowest last (overlayfs ``lowerdir`` order), and the packages."""

    install: Path
    base: Path
    packages: Packages

    def lowerdir(self) -> str:
        return f"{self.install}:{self.base}"


def apt_sources() -> list[Path]:
    """This machine's apt source files (deb822 ``.sources`` and one-line ``.list``), in name order."""
    found = sorted(path for path in APT_SOURCES_DIR.glob("*") if path.suffix in (".sources", ".list"))
    if not found and APT_SOURCES_LIST.is_file():
        found = [APT_SOURCES_LIST]
    if not found:
        raise RootfsError(f"no apt sources under {APT_SOURCES_DIR} or {APT_SOURCES_LIST}: cannot run mmdebstrap")
    return found


def _digest(parts: list[bytes]) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(len(part).to_bytes(8, "big"))
        hasher.update(part)
    return hasher.hexdigest()[:16]


def _run(argv: list[str], what: str, *, env: dict[str, str] | None = None, timeout_s: float = _BUILD_TIMEOUT_S,
         ) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout_s, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise RootfsError(f"{what} failed (exit {done.returncode}):\n{tail}")


def build_base(build_dir: Path, depends: list[str]) -> Path:
    """The cached bookworm base with ``depends`` installed too, built with mmdebstrap if it is not there yet."""
    sources = apt_sources()
    packages = [*BASE_PACKAGES, *(name for name in depends if name not in BASE_PACKAGES)]
    key = _digest([SUITE.encode(), " ".join(packages).encode()] + [path.read_bytes() for path in sources])
    base = build_dir / f"base-{key}"
    if (base / "etc/os-release").exists():
        log.info("rootfs: reusing %s", base)
        return base
    for old in build_dir.glob("base-*"):
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)  # an old package list's base: the new one replaces it
    if shutil.which("mmdebstrap") is None:
        raise RootfsError("mmdebstrap is not installed (make e2e installs it: contrib/bootstrap.sh --e2e)")
    partial = build_dir / f"base-{key}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    build_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    log.info("rootfs: building %s with mmdebstrap from %s", base, ", ".join(map(str, sources)))
    # A persistent journal (/var/log/journal) so that a host's log survives its reboots.
    _run(["mmdebstrap", "--variant=minbase", f"--include={','.join(packages)}",
          "--customize-hook=mkdir -p \"$1/var/log/journal\"", SUITE, str(partial), *map(str, sources)],
         "mmdebstrap", env={**CLEAN_ENV, "TMPDIR": str(build_dir)})
    partial.rename(base)
    log.info("rootfs: base built in %.0fs", time.monotonic() - started)
    return base


def build_packages(source_dir: Path, build_dir: Path) -> Packages:
    """``make deb``'s package of the checkout, and the same code as an earlier version (for upgrades).

    Both are copied to ``build_dir/debs``; the earlier one is the version with
    ``~e2e.previous`` appended, which Debian orders before it.
    """
    debs = build_dir / "debs"
    shutil.rmtree(debs, ignore_errors=True)
    debs.mkdir(parents=True)
    built: list[Path] = []
    for suffix in ("~e2e.previous", ""):
        env = {**CLEAN_ENV, "HOME": os.environ.get("HOME", "/root")}
        if suffix:
            env["DEB_VERSION"] = _version(source_dir) + suffix
        done = subprocess.run(["sh", "contrib/build-deb.sh"], cwd=source_dir, capture_output=True, text=True,
                              env=env, timeout=_BUILD_TIMEOUT_S, check=False)
        lines = (done.stdout + done.stderr).splitlines()
        made = [line.split(": ", 1)[1] for line in lines if line.startswith("build-deb: dist/")]
        if done.returncode != 0 or not made:
            raise RootfsError(f"make deb failed (exit {done.returncode}):\n" + "\n".join(lines[-30:]))
        target = debs / Path(made[-1]).name
        shutil.copy2(source_dir / made[-1], target)
        built.append(target)
    return Packages(previous=built[0], current=built[1])


def _version(source_dir: Path) -> str:
    text = (source_dir / "locksmithd/__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    if match is None:
        raise RootfsError("no __version__ in locksmithd/__init__.py")
    return match.group(1)


def package_depends(deb: Path) -> list[str]:
    """The names of the Debian packages ``deb`` depends on (versions and ``:any`` dropped)."""
    field = subprocess.run(["dpkg-deb", "-f", str(deb), "Depends"], capture_output=True, text=True, check=True,
                           timeout=60).stdout
    names = [part.split("|")[0].strip().split(" ")[0].split(":")[0] for part in field.split(",")]
    return sorted({name for name in names if name})


def _deb_content(path: Path) -> bytes:
    """What a package installs and runs (its control fields and file tree), for the install layer's key."""
    control = subprocess.run(["dpkg-deb", "-I", str(path)], capture_output=True, check=True, timeout=60).stdout
    tree = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(path)], capture_output=True, check=True,
                          timeout=60).stdout
    return control + hashlib.sha256(tree).digest()


def build_install(build_dir: Path, base: Path, deb: Path) -> Path:
    """The install layer over ``base``: ``apt-get install ./<deb>``, as README tells an operator."""
    key = _digest([base.name.encode(), _deb_content(deb)])
    install = build_dir / f"install-{key}"
    if (install / "usr/bin/locksmithd").exists():
        return install
    for old in build_dir.glob("install-*"):
        shutil.rmtree(old, ignore_errors=True)  # one install layer at a time: they are cheap to remake
    partial = build_dir / f"install-{key}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    upper, work, merged = partial / "upper", partial / "work", partial / "merged"
    for path in (upper, work, merged):
        path.mkdir(parents=True)
    _run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={base},upperdir={upper},workdir={work}",
          str(merged)], "mounting the install layer")
    try:
        shutil.copy2(deb, merged / "tmp" / deb.name)
        _run(["chroot", str(merged), "apt-get", "install", "-y", f"/tmp/{deb.name}"],
             "apt-get install of the package into the root filesystem",
             env={**CLEAN_ENV, "DEBIAN_FRONTEND": "noninteractive"})
        (merged / "tmp" / deb.name).unlink()
    finally:
        _run(["umount", str(merged)], "unmounting the install layer", timeout_s=60)
    upper.rename(install)
    shutil.rmtree(partial, ignore_errors=True)
    return install


def prepare_layers(source_dir: Path, build_dir: Path) -> Layers:
    """Both layers, reusing what is cached; the base is built only when its key changed.

    Also records them in ``build_dir/layers.json`` for ``recorded_layers``.
    """
    source_dir, build_dir = source_dir.resolve(), build_dir.resolve()
    packages = build_packages(source_dir, build_dir)
    base = build_base(build_dir, package_depends(packages.current))
    layers = Layers(install=build_install(build_dir, base, packages.current), base=base, packages=packages)
    (build_dir / LAYERS_FILE).write_text(json.dumps({
        "install": str(layers.install), "base": str(layers.base), "previous": str(packages.previous),
        "current": str(packages.current)}))
    return layers


def recorded_layers(build_dir: Path) -> Layers | None:
    """The layers the last ``prepare_layers`` made in ``build_dir``, if they are still there."""
    try:
        paths = json.loads((build_dir / LAYERS_FILE).read_text())
        layers = Layers(install=Path(paths["install"]), base=Path(paths["base"]),
                        packages=Packages(previous=Path(paths["previous"]), current=Path(paths["current"])))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return layers if layers.install.is_dir() and layers.base.is_dir() else None


def main() -> None:
    """``python -m harness.rootfs [BUILD_DIR]``: build or reuse the layers, print where they are."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "build/e2e")
    started = time.monotonic()
    try:
        layers = prepare_layers(Path(__file__).resolve().parent.parent, build_dir)
    except RootfsError as error:
        print(f"e2e: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"e2e: root filesystem ready in {time.monotonic() - started:.1f}s: {layers.lowerdir()}")


if __name__ == "__main__":
    main()
