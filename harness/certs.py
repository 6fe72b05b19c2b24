"""A throw-away certificate authority with etcd server and client certificates."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CLIENT_COMMON_NAME = "locksmithd"


@dataclass(frozen=True)
class Pki:
    """Paths of PEM files written by ``make_pki``; keys are mode 0600."""

    directory: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_common_name: str


def make_pki(
    directory: str | os.PathLike[str],
    client_common_name: str = DEFAULT_CLIENT_COMMON_NAME,
) -> Pki:
    """Create a fresh CA and write CA, server and client PEM files into ``directory``.

    The server certificate is valid for 127.0.0.1, ::1 and localhost. The
    client certificate's common name is ``client_common_name``: with
    ``--client-cert-auth`` and auth enabled, etcd takes it as the user name.
    trustme marks both leaf certificates for server and client use, which etcd
    3.4 needs because its gRPC gateway dials itself with the server certificate.
    ``directory`` is created if missing; existing files are overwritten.
    """
    import trustme  # a test-only dependency: loaded only when certificates are made

    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="locksmithd test CA")
    server = ca.issue_cert("127.0.0.1", "::1", "localhost", common_name="etcd-server")
    # Go rejects a critical subjectAltName without names, so the client gets one.
    client = ca.issue_cert("client.locksmithd.test", common_name=client_common_name)
    pki = Pki(
        directory=root,
        ca_cert=root / "ca.pem",
        server_cert=root / "server.pem",
        server_key=root / "server-key.pem",
        client_cert=root / "client.pem",
        client_key=root / "client-key.pem",
        client_common_name=client_common_name,
    )
    ca.cert_pem.write_to_path(str(pki.ca_cert))
    server.cert_chain_pems[0].write_to_path(str(pki.server_cert))
    client.cert_chain_pems[0].write_to_path(str(pki.client_cert))
    for blob, path in ((server.private_key_pem, pki.server_key), (client.private_key_pem, pki.client_key)):
        path.touch()
        path.chmod(0o600)
        blob.write_to_path(str(path))
    return pki
