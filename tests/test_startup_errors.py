"""`querator serve` refuses what it cannot use with one line on stderr: the file and key or the flag, what
is wrong and what is allowed; never a traceback (ADR 0011). Each case runs the real command."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.support import HOST, ServerProcess


def serve(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "querator", "serve", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The only line the failed start printed on stderr."""
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "querator.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'port = "23294"\n',
            "querator: wrong type in config; {path}: port is a string ('23294') but must be an integer",
        ),
        (
            "max-clients = true\n",
            "querator: wrong type in config; {path}: max-clients is a boolean (True) but must be an integer",
        ),
        (
            "prot = 2319\n",
            "querator: unknown config key; {path}: 'prot' is not a setting (did you mean 'port'?)",
        ),
        (
            "colour = 1\n",
            "querator: unknown config key; {path}: 'colour' is not a setting; "
            "conf/querator.toml lists every key",
        ),
        (
            '[[queue]]\nname = "jobs"\nlease-timout = 5000\n',
            "querator: unknown config key; {path}: 'lease-timout' is not a key of [[queue]] "
            "(did you mean 'lease-timeout'?)",
        ),
        (
            '[[queue]]\nname = "jobs"\npartitions = "4"\n',
            "querator: wrong type in config; {path}: partitions in [[queue]] is a string ('4') "
            "but must be an integer",
        ),
        (
            'log-level = "verbose"\n',
            "querator: invalid setting; {path}: log-level is 'verbose'; allowed: debug, info, warning, error",
        ),
        (
            '[[user]]\nname = "reader"\npassword = "pw"\ncommands = ["read"]\n',
            "querator: unknown command group; {path}: [[user]] 'reader': commands has read; "
            "allowed: admin, consume, produce",
        ),
        (
            '[[queue]]\nname = "a"\ndead-queue = "b"\n[[queue]]\nname = "b"\ndead-queue = "a"\n',
            "querator: declared dead queues form a cycle; {path}: [[queue]] 'a': a -> b -> a; "
            "a dead queue may not have a dead queue of its own",
        ),
        (
            '[[queue]]\nname = "a"\ndead-queue = "nowhere"\n',
            "querator: declared dead queue does not exist; {path}: [[queue]] 'a' names dead-queue 'nowhere', "
            "which is neither declared in the file nor an existing queue",
        ),
        (
            '[[queue]]\nname = "a"\n[[queue]]\nname = "a"\n',
            "querator: queue declared twice; {path}: [[queue]] 'a' appears more than once",
        ),
        (
            '[[queue]]\nname = "a"\nlease-timeout = 0\n',
            "querator: declared queue cannot be applied; {path}: [[queue]] 'a': "
            "LEASE-TIMEOUT must be between 1 and 604800000",
        ),
        (
            "port = \n",
            "querator: cannot read the config file; {path}: Invalid value (at line 1, column 8)",
        ),
    ],
)
def test_a_bad_config_file_is_one_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    result = serve("--config", str(path), "--backend", "memory")
    assert one_line(result) == expected.format(path=path)
    assert result.returncode == 2


def test_a_missing_config_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    line = one_line(serve("--config", str(path), "--backend", "memory"))
    assert line.startswith(f"querator: cannot read the config file; {path}: "), line
    assert "No such file or directory" in line


def test_a_bad_flag_is_one_line() -> None:
    line = one_line(serve("--log-level", "verbose", "--backend", "memory"))
    assert line == "querator: invalid setting; --log-level is 'verbose'; allowed: debug, info, warning, error"
    line = one_line(serve("--port", "abc"))
    assert line == "querator serve: argument --port: invalid int value: 'abc'; see querator serve --help"


@pytest.mark.parametrize(
    ("user", "problem"),
    [
        (
            'password = ""',
            "user without a password; {path}: [[user]] 'orders-writer' has none: set password, "
            'password-sha256 ("<64 hex digits>") or nopass = true (any password logs in)',
        ),
        (
            'password = "pw"\nnopass = true',
            "user has nopass and a password; {path}: [[user]] 'orders-writer': remove nopass = true, "
            "or the password to let anyone in",
        ),
        (
            'password = "pw"\npassword-sha256 = "' + "ab" * 32 + '"',
            "user has two passwords; {path}: [[user]] 'orders-writer' gives password and "
            "password-sha256: keep one",
        ),
        (
            'password-sha256 = "abc"',
            "invalid password-sha256; {path}: [[user]] 'orders-writer': it must be 64 hex digits",
        ),
    ],
)
def test_a_user_must_choose_a_password_or_nopass(tmp_path: Path, user: str, problem: str) -> None:
    path = write(tmp_path, f'requirepass = "secret"\n[[user]]\nname = "orders-writer"\n{user}\n')
    line = one_line(serve("--config", str(path), "--backend", "memory"))
    assert line == "querator: " + problem.format(path=path)


def test_the_sample_user_refuses_to_start_until_given_a_password(tmp_path: Path) -> None:
    """Uncommenting the sample `[[user]]` of conf/querator.toml must not open the server to anyone."""
    sample = (Path(__file__).resolve().parent.parent / "conf" / "querator.toml").read_text()
    head, _, users = sample.partition("# [[user]]")
    uncommented = "\n".join(line.removeprefix("# ") for line in ("# [[user]]" + users).splitlines())
    path = write(tmp_path, head.replace('requirepass = ""', 'requirepass = "secret"') + uncommented)
    line = one_line(serve("--config", str(path), "--data", str(tmp_path / "data")))
    assert line.startswith(f"querator: user without a password; {path}: [[user]] 'orders-writer' has none")


def test_a_taken_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind((HOST, 0))
        holder.listen()
        port = holder.getsockname()[1]
        line = one_line(serve("--backend", "memory", "--port", str(port)))
        assert line == (
            f"querator: cannot listen; {HOST}:{port} (--port): address already in use; "
            "choose a free port, or stop what holds it"
        )
        path = write(tmp_path, f"port = {port}\n")
        line = one_line(
            subprocess.run(
                [sys.executable, "-m", "querator", "serve", "--config", str(path), "--backend", "memory"],
                capture_output=True,
                text=True,
                timeout=60,
            )
        )
        assert line.startswith(f"querator: cannot listen; {HOST}:{port} ({path}: port): "), line


def test_a_second_server_on_the_same_data_directory_is_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = ServerProcess(data).start()
    try:
        line = one_line(serve("--data", str(data)))
        assert line == (
            f"querator: data directory in use by another Querator; {data} (--data) is locked: "
            "stop the other server or give another directory"
        )
        assert redis.Redis(port=first.port).ping()
    finally:
        first.kill()


def test_version_flag_prints_the_package_version() -> None:
    from importlib.metadata import version

    import querator

    result = subprocess.run(
        [sys.executable, "-m", "querator", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert result.stdout == f"querator {querator.__version__}\n"
    assert version("querator") == querator.__version__
