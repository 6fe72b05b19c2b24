"""Raw etcd requests that python3-etcd3 cannot build: transactions with revisions, bounded ranges, paged reads."""

from __future__ import annotations

from typing import Any, Sequence

import grpc
from etcd3 import etcdrpc

from locksmithd.etcd.keys import prefix_end
from locksmithd.etcd.store import StoredKey


def txn(client: Any, ops: Sequence[Any], guards: Sequence[Any] = (), otherwise: Sequence[Any] = ()) -> Any:
    """One etcd transaction: ``ops`` (python3-etcd3 Put/Get/Delete) if every guard holds, else ``otherwise``.

    ``ops`` may also be raw RequestOps (see ``range_op``). The one place that sends a raw Txn. Raw, not ``client.transaction``,
    because the caller needs the response header's revision and ranges with
    create revisions and leases, which python3-etcd3's wrapper drops. Raises
    grpc.RpcError, which ``EtcdCalls._call`` classifies.
    """
    def raw(branch: Sequence[Any]) -> list[Any]:
        return [op if isinstance(op, etcdrpc.RequestOp) else client._ops_to_requests([op])[0] for op in branch]

    request = etcdrpc.TxnRequest(compare=[guard.build_message() for guard in guards], success=raw(ops),
                                 failure=raw(otherwise))
    return client.kvstub.Txn(request, client.timeout, credentials=client.call_credentials, metadata=client.metadata)


def range_op(key: str, range_end: str = "", **options: Any) -> Any:
    """A raw range request (as a transaction op): python3-etcd3 cannot count, limit or bound create revisions."""
    return etcdrpc.RequestOp(request_range=etcdrpc.RangeRequest(
        key=key.encode("utf-8", errors="surrogateescape"),
        range_end=range_end.encode("utf-8", errors="surrogateescape"), **options))



PAGE_KEYS = 10_000
"""Keys per page of a keys-only read (10,000 keys of 100 bytes: 1 MB); smaller on RESOURCE_EXHAUSTED."""
PAGE_VALUES = 500
"""Keys per page when values are read (waiter values are ~100 bytes; bigger ones shrink the page)."""
_RESTARTS = 3


def read_pages(client: Any, prefix: str, keys_only: bool) -> list[StoredKey]:
    """Every key under ``prefix`` at one revision, page by page in key order, then oldest first."""
    end = prefix_end(prefix).encode("utf-8", errors="surrogateescape")
    limit = PAGE_KEYS if keys_only else PAGE_VALUES
    for attempt in range(_RESTARTS + 1):
        start, revision = prefix.encode("utf-8", errors="surrogateescape"), 0
        found: list[StoredKey] = []
        while True:
            request = etcdrpc.RangeRequest(key=start, range_end=end, keys_only=keys_only, limit=limit,
                                           revision=revision)
            try:
                reply = client.kvstub.Range(request, client.timeout, credentials=client.call_credentials,
                                            metadata=client.metadata)
            except grpc.RpcError as exc:
                code = exc.code() if callable(getattr(exc, "code", None)) else None
                if code is grpc.StatusCode.RESOURCE_EXHAUSTED and limit > 1:
                    limit = max(limit // 4, 1)  # the reply passed the client's limit: smaller pages
                    continue
                if code is grpc.StatusCode.OUT_OF_RANGE and revision and attempt < _RESTARTS:
                    break  # compacted between pages: read again from the start
                raise
            revision = revision or int(reply.header.revision)
            found.extend(StoredKey.from_kv(kv) for kv in reply.kvs)
            if not reply.more or not reply.kvs:
                return sorted(found, key=lambda entry: entry.create_revision)
            start = bytes(reply.kvs[-1].key) + b"\0"
    raise AssertionError("unreachable: the last attempt returns or raises")

