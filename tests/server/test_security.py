"""Named users with queue patterns and command groups, TLS with optional client certificates."""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from querator.config import Config
from tests.support import ServerProcess

ALICE_PASS = "alice-s3cret-pass"
BOB_PASS = "bob-s3cret-pass"
ADMIN_PASS = "admin-s3cret-pass"


@pytest.fixture
def acl_server(tmp_path: Path) -> Iterator[ServerProcess]:
    admin_digest = hashlib.sha256(ADMIN_PASS.encode()).hexdigest()
    config = tmp_path / "users.toml"
    config.write_text(
        'requirepass = "default-pass"\n'
        f'[[user]]\nname = "alice"\npassword = "{ALICE_PASS}"\nqueues = ["orders*"]\ncommands = ["produce"]\n'
        f'[[user]]\nname = "bob"\npassword = "{BOB_PASS}"\ncommands = ["consume"]\n'
        f'[[user]]\nname = "admin"\npassword-sha256 = "{admin_digest}"\ncommands = ["admin"]\n'
    )
    server = ServerProcess(tmp_path / "data", "--config", str(config), backend="memory").start()
    yield server
    server.kill()


def _client(server: ServerProcess, user: str, password: str, protocol: int = 3) -> redis.Redis:
    return redis.Redis(port=server.port, username=user, password=password, protocol=protocol, retry=None)


def test_users_are_limited_to_their_groups_and_queue_patterns(acl_server: ServerProcess) -> None:
    admin = _client(acl_server, "admin", ADMIN_PASS)
    assert admin.execute_command("QCREATE", "orders-eu") == b"OK"
    assert admin.execute_command("QCREATE", "payments") == b"OK"

    alice = _client(acl_server, "alice", ALICE_PASS, protocol=2)
    assert len(alice.execute_command("QPRODUCE", "orders-eu", "ITEMS", "a")) == 1
    with pytest.raises(redis.exceptions.NoPermissionError, match="No permissions to access a key"):
        alice.execute_command("QPRODUCE", "payments", "ITEMS", "a")
    with pytest.raises(
        redis.exceptions.NoPermissionError, match="User alice has no permissions to run the 'qlease' command"
    ):
        alice.execute_command("QLEASE", "orders-eu")
    assert alice.execute_command("QLIST") == [b"orders-eu"]
    assert alice.execute_command("QLEN", "orders-eu") == 1

    bob = _client(acl_server, "bob", BOB_PASS)
    items = bob.execute_command("QLEASE", "orders-eu")
    assert items[0][1] == b"a"
    assert bob.execute_command("QCOMPLETE", "orders-eu", items[0][0]) == 1
    with pytest.raises(redis.exceptions.NoPermissionError):
        bob.execute_command("QCREATE", "mine")
    with pytest.raises(redis.exceptions.NoPermissionError):
        admin.execute_command("QPRODUCE", "orders-eu", "ITEMS", "x")


def test_raw_noperm_and_wrongpass_replies_are_redis_words(acl_server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", acl_server.port), timeout=5) as sock:
        sock.sendall(b"QLEN orders-eu\r\n")
        assert sock.recv(100) == b"-NOAUTH Authentication required.\r\n"
        sock.sendall(b"AUTH alice wrong\r\n")
        assert sock.recv(100) == b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
        sock.sendall(b"AUTH nobody wrong\r\n")
        assert sock.recv(100) == b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
        sock.sendall(f"HELLO 2 AUTH alice {ALICE_PASS}\r\n".encode())
        assert sock.recv(500).startswith(b"*14\r\n")
        sock.sendall(b"QCREATE orders-x\r\n")
        assert sock.recv(100) == b"-NOPERM User alice has no permissions to run the 'qcreate' command\r\n"
        sock.sendall(b"RESET\r\n")
        assert sock.recv(100) == b"+RESET\r\n"
        sock.sendall(b"QLEN orders-eu\r\n")
        assert sock.recv(100) == b"-NOAUTH Authentication required.\r\n"


def test_passwords_never_reach_the_log(acl_server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", acl_server.port), timeout=5) as sock:
        for user, password in (("alice", "guess-one"), ("bob", BOB_PASS), ("admin", ADMIN_PASS)):
            sock.sendall(f"AUTH {user} {password}\r\n".encode())
            assert sock.recv(200)[:1] in (b"+", b"-")
    assert acl_server.stop() == 0
    log = acl_server.read_log()
    for secret in (ALICE_PASS, BOB_PASS, ADMIN_PASS, "guess-one", "default-pass"):
        assert secret not in log


def test_default_bind_is_loopback() -> None:
    assert Config().bind == "127.0.0.1"


# -- TLS ---------------------------------------------------------------------------------------------------


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    d = tmp_path_factory.mktemp("certs")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Test CA",
             "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"))  # fmt: skip
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"))  # fmt: skip
        _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.crt"),
                 "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2",
                 "-extfile", str(d / "san.cnf"), "-out", str(d / f"{name}.crt"))  # fmt: skip
    return d


def _tls_server(tmp_path: Path, certs: Path, auth_clients: str) -> ServerProcess:
    config = tmp_path / "tls.toml"
    with socket.socket() as probe:  # a free port for the TLS listener
        probe.bind(("127.0.0.1", 0))
        tls_port = probe.getsockname()[1]
    config.write_text(
        f'tls-port = {tls_port}\ntls-cert-file = "{certs / "server.crt"}"\n'
        f'tls-key-file = "{certs / "server.key"}"\ntls-ca-cert-file = "{certs / "ca.crt"}"\n'
        f'tls-auth-clients = "{auth_clients}"\n'
    )
    return ServerProcess(tmp_path / "data", "--config", str(config), backend="memory").start()


def _tls_port(server: ServerProcess) -> int:
    import re

    match = re.search(r"TLS on port (\d+)", server.read_log())
    assert match, server.read_log()
    return int(match.group(1))


def test_redis_py_and_redis_cli_over_tls(tmp_path: Path, certs: Path) -> None:
    server = _tls_server(tmp_path, certs, "no")
    try:
        port = _tls_port(server)
        client = redis.Redis(port=port, ssl=True, ssl_ca_certs=str(certs / "ca.crt"))
        assert client.ping() is True
        assert client.execute_command("QCREATE", "q") == b"OK"
        assert len(client.execute_command("QPRODUCE", "q", "ITEMS", "secret-payload")) == 1
        if shutil.which("redis-cli"):
            out = subprocess.run(
                ["redis-cli", "--tls", "--cacert", str(certs / "ca.crt"), "-p", str(port), "QLEN", "q"],
                capture_output=True,
                text=True,
                timeout=10,
            )
            assert out.stdout.strip() == "1", out.stderr
        # The plain port still works alongside.
        assert redis.Redis(port=server.port).execute_command("QLEN", "q") == 1
    finally:
        server.kill()


def test_tls_client_certificates_required(tmp_path: Path, certs: Path) -> None:
    server = _tls_server(tmp_path, certs, "yes")
    try:
        port = _tls_port(server)
        anonymous = redis.Redis(port=port, ssl=True, ssl_ca_certs=str(certs / "ca.crt"), retry=None)
        with pytest.raises(redis.exceptions.ConnectionError):
            anonymous.ping()
        with_cert = redis.Redis(
            port=port,
            ssl=True,
            ssl_ca_certs=str(certs / "ca.crt"),
            ssl_certfile=str(certs / "client.crt"),
            ssl_keyfile=str(certs / "client.key"),
        )
        assert with_cert.ping() is True
    finally:
        server.kill()
