# The two entry points the README promises; each does all its own set-up.
.PHONY: setup demo test test-debian e2e bench bench-scale bench-fleetlock soak lint deb

# The long fault-injection run; its defaults (200 runs, about 45 minutes on 2 cores) and
# options: .venv/bin/python -m harness.soak --help
SOAK_ARGS ?=

setup:
	sh contrib/bootstrap.sh

# dist/locksmithd_<version>_all.deb, built with debhelper and dh-python from contrib/debian/
# in build/deb/ (about 30 s); install with: apt install ./dist/locksmithd_<version>_all.deb
deb: setup
	sh contrib/build-deb.sh

demo: setup
	.venv/bin/python contrib/demo.py $(DEMO_ARGS)

# Two workers: the suite mostly waits on real etcd, D-Bus and daemons (12 min serial, about 7 on 2).
PYTEST_WORKERS ?= 2

test: setup
	.venv/bin/python -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

# The tests that touch each runtime library, on Debian bookworm's own packages (python3-etcd3 0.12.0,
# python3-dbus-fast 1.84, python3-aiohttp 3.8.4, ...: what the Debian package depends on) in
# .venv-debian, which sees only those (contrib/bootstrap.sh --debian checks it). Not in `make test`.
DEBIAN_TESTS ?= tests/test_etcd_client.py tests/test_lock_cas.py tests/test_etcd_edges.py tests/test_ctl_etcd.py \
	tests/test_bus_update_engine.py tests/test_bus_logind.py tests/test_testing_services.py tests/test_inotify.py \
	tests/test_daemon_sources.py tests/test_fleetlock_strategy.py tests/test_metrics.py

test-debian:
	sh contrib/bootstrap.sh --debian
	.venv-debian/bin/python -m pytest -n $(PYTEST_WORKERS) $(DEBIAN_TESTS) $(PYTEST_ARGS)

# The real-systemd fleet (tests/e2e): bookworm roots built once with mmdebstrap (cached under
# build/e2e), booted with systemd-nspawn; needs root. About 5 minutes cold, 3 warm, on 2 cores.
e2e: setup
	sh contrib/bootstrap.sh --e2e
	.venv/bin/python -m harness.e2e $(E2E_ARGS)

# The handoff, fairness, rollout and idle-daemon figures, then the scale run at N = 100 and 1,000
# (also on 3 members with a leader restart), then the FleetLock server at K = 100 and 1,000:
# about 11 minutes on 2 cores.
bench: setup
	.venv/bin/python bench/run.py $(BENCH_ARGS)
	.venv/bin/python bench/scale_bench.py --sizes 100,1000
	.venv/bin/python bench/fleetlock_bench.py --sizes 100,1000

# The FleetLock server with K = 100, 1,000, 10,000 and 100,000 clients queued through its HTTP path:
# cost per refused poll and leases left; about 10 minutes on 2 cores. Options: bench/fleetlock_bench.py --help
bench-fleetlock: setup
	.venv/bin/python bench/fleetlock_bench.py $(FLEETLOCK_ARGS)

# The scale run at N = 100, 1,000 (also on 3 members with a leader restart) and 10,000 hosts, each
# with its own lease and watches; about 15 minutes on 2 cores. Options: bench/scale_bench.py --help
bench-scale: setup
	.venv/bin/python bench/scale_bench.py $(SCALE_ARGS)

soak: setup
	.venv/bin/python -m harness.soak $(SOAK_ARGS)

lint: setup
	.venv/bin/pip install -q mypy && .venv/bin/mypy
