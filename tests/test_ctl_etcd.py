"""locksmithctl and the etcd store against real etcd: commands, TLS, auth, failover, races, bad documents."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from locksmithd.errors import CorruptDocument, ExitCode, SemaphoreFull, StoreDenied
from locksmithd.etcd.connection import EtcdSettings, parse_endpoints
from locksmithd.etcd.client import EtcdStore
from locksmithd.etcd.keys import semaphore_key
from locksmithd.etcd.lock import SemaphoreClient
from harness.etcd import EtcdCluster, enable_auth

CTL = str(Path(sys.executable).with_name("locksmithctl"))


def ctl(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LOCKSMITHCTL_")}
    return subprocess.run([CTL, *args], capture_output=True, text=True, timeout=60, env={**base, **(env or {})},
                          input=stdin)


def on(cluster: EtcdCluster, prefix: str, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return ctl("--endpoint", cluster.client_urls[0], "--etcd-key-prefix", prefix, *args, **kw)  # type: ignore[arg-type]


def store_for(cluster: EtcdCluster, **settings: object) -> EtcdStore:
    return EtcdStore(EtcdSettings(
        request_timeout_s=5.0, endpoints=parse_endpoints(cluster.client_urls, "test", "endpoints"), **settings))  # type: ignore[arg-type]


def raw_put(cluster: EtcdCluster, key: str, value: bytes) -> None:
    store = store_for(cluster)
    try:
        store.put(key, value)
    finally:
        store.close()


def raw_get(cluster: EtcdCluster, key: str) -> bytes | None:
    store = store_for(cluster)
    try:
        stored = store.read(key)
        return None if stored is None else stored.value
    finally:
        store.close()


def test_status_of_absent_semaphore_has_locksmith_layout(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """With no holder status prints what locksmith prints, Available and Max only, and does not create the key."""
    result = on(etcd_node, key_prefix, "status")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Available: 1\nMax: 1\n" and result.stderr == ""
    assert raw_get(etcd_node, semaphore_key("", key_prefix)) is None


def test_lock_unlock_set_max_round_trip(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """lock, set-max, status (text and JSON) and unlock behave like locksmith's and store its JSON."""
    assert on(etcd_node, key_prefix, "lock", "a").returncode == 0
    full = on(etcd_node, key_prefix, "lock", "b")
    assert full.returncode == ExitCode.SEMAPHORE_FULL and full.stderr.count("\n") == 1 and "full" in full.stderr
    result = on(etcd_node, key_prefix, "set-max", "3")
    assert result.returncode == 0 and result.stdout.splitlines() == ["Old: 1", "New: 3"]
    assert on(etcd_node, key_prefix, "lock", "b").returncode == 0
    again = on(etcd_node, key_prefix, "lock", "b")
    assert again.returncode == 0 and "already holds" in again.stdout
    text = on(etcd_node, key_prefix, "status").stdout.splitlines()
    assert text == ["Available: 1", "Max: 3", "", "MACHINE ID", "a", "b"]
    report = json.loads(on(etcd_node, key_prefix, "status", "--json").stdout)
    assert (report["group"], report["max"], report["available"], report["holders"]) == ("", 3, 1, ["a", "b"])
    stored = json.loads(raw_get(etcd_node, semaphore_key("", key_prefix)) or b"")
    assert (stored["semaphore"], stored["max"], stored["holders"]) == (1, 3, ["a", "b"])
    assert "acquired_at" in stored["holder_info"]["a"]
    missing = on(etcd_node, key_prefix, "unlock", "zz")
    assert missing.returncode == ExitCode.NOT_HOLDER and "not a holder" in missing.stderr
    assert on(etcd_node, key_prefix, "unlock", "a").returncode == 0
    assert json.loads(on(etcd_node, key_prefix, "status", "--json").stdout)["holders"] == ["b"]


def test_set_max_below_holders_says_it_drains(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """set-max below the holder count is accepted with a note; status shows negative availability."""
    on(etcd_node, key_prefix, "set-max", "2")
    on(etcd_node, key_prefix, "lock", "a")
    on(etcd_node, key_prefix, "lock", "b")
    result = on(etcd_node, key_prefix, "set-max", "1")
    assert result.returncode == 0 and "no host will get a slot" in result.stderr
    assert on(etcd_node, key_prefix, "status").stdout.startswith("Available: -1\nMax: 1")


def test_groups_use_locksmith_key_layout(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """A group's semaphore lives at groups/<query-escaped name>/semaphore (names have no spaces: one naming rule)."""
    assert on(etcd_node, key_prefix, "--group", "web&servers/eu", "lock", "a").returncode == 0
    key = f"{key_prefix}coreos.com/updateengine/rebootlock/groups/web%26servers%2Feu/semaphore"
    assert json.loads(raw_get(etcd_node, key) or b"")["holders"] == ["a"]
    assert on(etcd_node, key_prefix, "status", "--json").stdout.count('"holders": []') == 1


def test_env_configures_and_flags_win(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """LOCKSMITHCTL_* variables configure every option; a flag overrides its variable."""
    env = {"LOCKSMITHCTL_ENDPOINT": etcd_node.client_urls[0], "LOCKSMITHCTL_ETCD_KEY_PREFIX": key_prefix,
           "LOCKSMITHCTL_GROUP": "g1"}
    assert ctl("lock", "a", env=env).returncode == 0
    assert json.loads(ctl("status", "--json", env=env).stdout)["holders"] == ["a"]
    assert json.loads(ctl("--group", "g2", "status", "--json", env=env).stdout)["holders"] == []


def test_default_id_is_machine_id_and_missing_is_error(etcd_node: EtcdCluster, key_prefix: str, tmp_path: Path) -> None:
    """Without ID the machine-id is used; a missing or empty machine-id is an identity error, not ''."""
    machine_id = tmp_path / "machine-id"
    machine_id.write_text("0123456789abcdef0123456789abcdef\n")
    env = {"LOCKSMITHCTL_MACHINE_ID_FILE": str(machine_id)}
    assert on(etcd_node, key_prefix, "lock", env=env).returncode == 0
    assert on(etcd_node, key_prefix, "status").stdout.splitlines()[-1] == "0123456789abcdef0123456789abcdef"
    machine_id.write_text("")
    result = on(etcd_node, key_prefix, "unlock", env=env)
    assert result.returncode == ExitCode.IDENTITY and "machine-id" in result.stderr
    result = on(etcd_node, key_prefix, "lock", env={"LOCKSMITHCTL_MACHINE_ID_FILE": str(tmp_path / "nope")})
    assert result.returncode == ExitCode.IDENTITY


def test_dead_first_endpoint_is_skipped(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """With several endpoints an unreachable one is skipped (repeated and comma forms)."""
    dead = "http://127.0.0.1:9"
    result = ctl("--endpoint", dead, "--endpoint", etcd_node.client_urls[0], "--etcd-key-prefix", key_prefix,
                 "lock", "a")
    assert result.returncode == 0, result.stderr
    result = ctl("--endpoint", f"{dead},{etcd_node.client_urls[0]}", "--etcd-key-prefix", key_prefix, "status")
    assert result.returncode == 0 and result.stdout.splitlines()[-1] == "a"


def test_unreachable_etcd_names_endpoints_tried() -> None:
    """No endpoint answering: one line naming every endpoint tried, exit 7."""
    result = ctl("--endpoint", "http://127.0.0.1:9,http://127.0.0.1:10", "--etcd-timeout", "1", "status")
    assert result.returncode == ExitCode.STORE_UNAVAILABLE
    assert result.stderr.count("\n") == 1
    assert "127.0.0.1:9" in result.stderr and "127.0.0.1:10" in result.stderr


@pytest.mark.parametrize("args, fragment", [
    (["set-max", "x"], "whole number"),
    (["--endpoint", "ftp://h:1", "status"], "http:// or https://"),
    (["--endpoint", "http://h:99999", "status"], "URL"),
    (["--etcd-certfile", "/nonexistent", "status"], "/nonexistent"),
    (["--etcd-username", "u", "status"], "together"),
    (["frobnicate"], "No such command"),
])
def test_bad_arguments_are_usage_errors(args: list[str], fragment: str) -> None:
    """Bad arguments exit 2 with a message naming the problem."""
    result = ctl(*args)
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert fragment in result.stderr


def test_help_version_and_exit_codes_documented() -> None:
    """help lists the commands and the exit codes; --version prints the version."""
    result = ctl("help")
    assert result.returncode == 0
    for word in ("status", "lock", "unlock", "set-max", "send-need-reboot", "reboot", "semaphore full", "not holder"):
        assert word in result.stdout
    assert "Take a slot" in ctl("help", "lock").stdout
    assert ctl("--version").stdout.startswith("locksmithctl, version")


CORRUPT_DOCUMENTS = {
    "invalid JSON": b'{"semaphore":1,',
    "wrong types": b'{"semaphore":"1","max":1,"holders":[]}',
    "negative max": b'{"semaphore":-1,"max":-1,"holders":[]}',
    "duplicate holders": b'{"semaphore":0,"max":2,"holders":["a","a"]}',
    "count mismatch": b'{"semaphore":1,"max":1,"holders":["a"]}',
    "non-UTF-8": b'{"semaphore":1,"max":1,"holders":["\xff\xfe"]}',
    "huge": b'{"semaphore":1,"max":1,"holders":[],"pad":"' + b"x" * (1024 * 1024 + 10) + b'"}',
}


@pytest.mark.parametrize("name", sorted(CORRUPT_DOCUMENTS))
def test_corrupt_document_is_reported_and_left_unchanged(etcd_node: EtcdCluster, key_prefix: str, name: str) -> None:
    """Every command refuses a corrupt document with exit 8, names the fault and leaves the bytes alone."""
    key = semaphore_key("", key_prefix)
    raw = CORRUPT_DOCUMENTS[name]
    raw_put(etcd_node, key, raw)
    for args in (["status"], ["status", "--json"], ["lock", "a"], ["unlock", "a"], ["set-max", "3"]):
        result = on(etcd_node, key_prefix, *args)
        assert result.returncode == ExitCode.CORRUPT_DOCUMENT, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and "corrupt" in result.stderr and "reset" in result.stderr
    assert raw_get(etcd_node, key) == raw


def test_reset_needs_confirmation_then_repairs(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """reset refuses without --yes when not interactive; with --yes it writes a fresh document."""
    key = semaphore_key("", key_prefix)
    raw_put(etcd_node, key, b"garbage")
    refused = on(etcd_node, key_prefix, "reset", "--max", "2")
    assert refused.returncode == ExitCode.ABORTED and raw_get(etcd_node, key) == b"garbage"
    assert on(etcd_node, key_prefix, "status", "--raw").stdout.strip() == "garbage"
    assert on(etcd_node, key_prefix, "reset", "--max", "2", "--yes").returncode == 0
    # locksmith's fields, plus the history counter: the reset is recorded in the group's history
    assert json.loads(raw_get(etcd_node, key) or b"") == {"semaphore": 2, "max": 2, "holders": [], "history_seq": 1}


def test_many_clients_racing_never_exceed_max(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """40 clients race for 3 slots through real etcd; exactly 3 win and the document stays consistent."""
    SemaphoreClient(store_for(etcd_node), "", key_prefix).set_max(3)
    winners: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(40)

    def contender(index: int) -> None:
        client = SemaphoreClient(store_for(etcd_node), "", key_prefix)
        barrier.wait()
        try:
            client.lock(f"host-{index:02d}")
            winners.append(f"host-{index:02d}")
        except SemaphoreFull:
            pass
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)
        finally:
            client.store.close()

    threads = [threading.Thread(target=contender, args=(i,)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    final = SemaphoreClient(store_for(etcd_node), "", key_prefix).read().semaphore
    assert sorted(winners) == list(final.holders) and len(winners) == 3 and final.available == 0


def test_client_certificate_tls(etcd_tls_node: EtcdCluster, key_prefix: str) -> None:
    """https with a client certificate works; without the certificate the server refuses."""
    pki = etcd_tls_node.pki
    assert pki is not None
    args = ["--endpoint", etcd_tls_node.client_urls[0], "--etcd-key-prefix", key_prefix,
            "--etcd-cafile", str(pki.ca_cert)]
    ok = ctl(*args, "--etcd-certfile", str(pki.client_cert), "--etcd-keyfile", str(pki.client_key), "lock", "a")
    assert ok.returncode == 0, ok.stderr
    refused = ctl(*args, "--etcd-timeout", "2", "status")
    assert refused.returncode != 0 and refused.stderr.count("\n") == 1


def test_ca_only_tls(etcd_tls_ca_only_node: EtcdCluster, key_prefix: str) -> None:
    """A CA file without a client certificate is a valid TLS configuration."""
    pki = etcd_tls_ca_only_node.pki
    assert pki is not None
    result = ctl("--endpoint", etcd_tls_ca_only_node.client_urls[0], "--etcd-key-prefix", key_prefix,
                 "--etcd-cafile", str(pki.ca_cert), "lock", "a")
    assert result.returncode == 0, result.stderr


def test_auth_role_limited_to_prefix(etcd_auth_node: EtcdCluster) -> None:
    """A user whose role covers only the prefix works there and is denied (exit 9) elsewhere; password never logged."""
    auth = etcd_auth_node.auth
    pki = etcd_auth_node.pki
    assert auth is not None and pki is not None
    base = ["--endpoint", etcd_auth_node.client_urls[0], "--etcd-cafile", str(pki.ca_cert),
            "--etcd-username", auth.user]
    env = {"LOCKSMITHCTL_ETCD_PASSWORD": auth.password}
    ok = ctl(*base, "--etcd-key-prefix", auth.key_prefix, "--debug", "lock", "a", env=env)
    assert ok.returncode == 0, ok.stderr
    assert auth.password not in ok.stderr + ok.stdout
    denied = ctl(*base, "--etcd-key-prefix", "other/", "lock", "a", env=env)
    assert denied.returncode == ExitCode.STORE_DENIED and "denied" in denied.stderr
    wrong = ctl(*base, "--etcd-key-prefix", auth.key_prefix, "status", env={"LOCKSMITHCTL_ETCD_PASSWORD": "nope"})
    assert wrong.returncode == ExitCode.STORE_DENIED and "nope" not in wrong.stderr


def test_auth_over_plain_http(fresh_etcd_node: EtcdCluster) -> None:
    """Username/password also works on a plain-http etcd (token carried as metadata)."""
    auth = enable_auth(fresh_etcd_node, "rootpw", "fleet", "fleetpw", "tenant/")
    settings = EtcdSettings(request_timeout_s=5.0, endpoints=parse_endpoints(fresh_etcd_node.client_urls, "t", "k"),
                            username=auth.user, password=auth.password, key_prefix="tenant/")
    store = EtcdStore(settings)
    try:
        client = SemaphoreClient(store, "", "tenant/")
        client.lock("a")
        assert client.read().semaphore.holders == ("a",)
        with pytest.raises(StoreDenied):
            SemaphoreClient(store, "", "elsewhere/").lock("a")
    finally:
        store.close()


def test_store_read_of_corrupt_document_raises_named_error(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """The library path raises CorruptDocument naming the key."""
    key = semaphore_key("", key_prefix)
    raw_put(etcd_node, key, b"[]")
    with pytest.raises(CorruptDocument, match=key):
        SemaphoreClient(store_for(etcd_node), "", key_prefix).read()
