"""Debian bookworm root filesystems for the real-systemd e2e: built once with mmdebstrap, then cached.

Two layers, each a plain directory under the build directory (``build/e2e`` by
default, ignored by git):

- ``base-<key>/``: bookworm minbase plus systemd, dbus, polkitd and python3, made
  by mmdebstrap from this machine's own apt sources (the files under
  ``/etc/apt/sources.list.d/``, else ``/etc/apt/sources.list``). ``key`` hashes
  the package list and those files, so a warm run reuses it and a changed
  mirror or list builds a new one.
- ``install-<key>/``: the overlay upper directory holding what an operator's
  install adds on top of the base: locksmithd in a venv at /opt/locksmithd from
  wheels built here, linked into /usr/local/bin as the shipped units expect
  (README "Install on a host"). ``key`` hashes the wheels, so it is rebuilt
  when the code changes (seconds), never the base.

Hosts mount ``install`` over ``base`` with overlayfs and keep their own upper
directory, so a host's files and journal survive its reboots.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("harness.rootfs")

SUITE = "bookworm"
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "polkitd", "python3", "python3-venv")
APT_SOURCES_DIR = Path("/etc/apt/sources.list.d")
APT_SOURCES_LIST = Path("/etc/apt/sources.list")
VENV = "/opt/locksmithd"
PROGRAMS = ("locksmithd", "locksmithctl", "locksmithd-fleetlock")
CLEAN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
             "HOME": "/root"}
_BUILD_TIMEOUT_S = 900
LAYERS_FILE = "layers.json"


class RootfsError(RuntimeError):
    """A layer could not be built; the message names the step and ends with its output."""


@dataclass(frozen=True)
class Layers:
    """The read-only layers of every host, lowest last (overlayfs ``lowerdir`` order)."""

    install: Path
    base: Path

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


def _wheel_content(path: Path) -> bytes:
    """What a wheel holds (names and bytes of its members), not its zip timestamps: equal code, equal key."""
    with zipfile.ZipFile(path) as wheel:
        return b"".join(name.encode() + b"\0" + wheel.read(name) for name in sorted(wheel.namelist()))


def build_base(build_dir: Path) -> Path:
    """The cached bookworm base, built with mmdebstrap if it is not there yet."""
    sources = apt_sources()
    key = _digest([SUITE.encode(), " ".join(BASE_PACKAGES).encode()] + [path.read_bytes() for path in sources])
    base = build_dir / f"base-{key}"
    if (base / "etc/os-release").exists():
        log.info("rootfs: reusing %s", base)
        return base
    if shutil.which("mmdebstrap") is None:
        raise RootfsError("mmdebstrap is not installed (make e2e installs it: contrib/bootstrap.sh --e2e)")
    partial = build_dir / f"base-{key}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    build_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    log.info("rootfs: building %s with mmdebstrap from %s", base, ", ".join(map(str, sources)))
    # A persistent journal (/var/log/journal) so that a host's log survives its reboots.
    _run(["mmdebstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
          "--customize-hook=mkdir -p \"$1/var/log/journal\"", SUITE, str(partial), *map(str, sources)],
         "mmdebstrap", env={**CLEAN_ENV, "TMPDIR": str(build_dir)})
    partial.rename(base)
    log.info("rootfs: base built in %.0fs", time.monotonic() - started)
    return base


def build_wheels(source_dir: Path, build_dir: Path) -> Path:
    """Wheels of locksmithd and its dependencies, built here with the running interpreter's pip.

    The dependencies' wheels are built again only when setup.cfg changed (a
    stamp holds its hash); locksmithd's own wheel is always built from the
    checkout, without its dependencies and in this environment (seconds).
    """
    wheels = build_dir / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    stamp = wheels / ".setup.cfg.sha256"
    wanted = _digest([(source_dir / "setup.cfg").read_bytes()])
    env = {**os.environ, "PIP_FIND_LINKS": str(wheels)}
    if not stamp.exists() or stamp.read_text() != wanted:
        _run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--wheel-dir", str(wheels),
              str(source_dir)], "pip wheel (dependencies)", env=env)
        stamp.write_text(wanted)
    for old in wheels.glob("locksmithd-*.whl"):
        old.unlink()  # always the checkout's code, never a stale build of it
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
          "--no-build-isolation", "--wheel-dir", str(wheels), str(source_dir)], "pip wheel (locksmithd)", env=env)
    return wheels


def build_install(build_dir: Path, base: Path, wheels: Path) -> Layers:
    """The install layer over ``base``: locksmithd from ``wheels`` in a venv, as README tells an operator."""
    names = sorted(path.name for path in wheels.glob("*.whl"))
    key = _digest([base.name.encode()] + [_wheel_content(wheels / name) for name in names])
    install = build_dir / f"install-{key}"
    if (install / VENV.lstrip("/") / "bin/locksmithd").exists():
        return Layers(install=install, base=base)
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
        staged = merged / "tmp/locksmithd-wheels"
        shutil.copytree(wheels, staged)
        links = " ".join(f"{VENV}/bin/{program}" for program in PROGRAMS)
        _run(["chroot", str(merged), "/bin/sh", "-ec",
              f"python3 -m venv {VENV}; {VENV}/bin/pip install -q --no-index --find-links /tmp/locksmithd-wheels "
              f"locksmithd; ln -sf {links} /usr/local/bin/; rm -rf /tmp/locksmithd-wheels /root/.cache"],
             "installing locksmithd into the root filesystem", env=CLEAN_ENV)
    finally:
        _run(["umount", str(merged)], "unmounting the install layer", timeout_s=60)
    upper.rename(install)
    shutil.rmtree(partial, ignore_errors=True)
    return Layers(install=install, base=base)


def prepare_layers(source_dir: Path, build_dir: Path) -> Layers:
    """Both layers, reusing what is cached; the base is built only when its key changed.

    Also records them in ``build_dir/layers.json`` for ``recorded_layers``.
    """
    source_dir, build_dir = source_dir.resolve(), build_dir.resolve()
    base = build_base(build_dir)
    layers = build_install(build_dir, base, build_wheels(source_dir, build_dir))
    (build_dir / LAYERS_FILE).write_text(json.dumps({"install": str(layers.install), "base": str(layers.base)}))
    return layers


def recorded_layers(build_dir: Path) -> Layers | None:
    """The layers the last ``prepare_layers`` made in ``build_dir``, if they are still there."""
    try:
        paths = json.loads((build_dir / LAYERS_FILE).read_text())
        layers = Layers(install=Path(paths["install"]), base=Path(paths["base"]))
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
