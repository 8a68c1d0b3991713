"""What the config loader refuses before anything starts, and how users' passwords are chosen (ADR 0011)."""

from __future__ import annotations

from pathlib import Path

import pytest

from querator.auth import Users
from querator.config import Config, ConfigError, UserDeclaration, load_config

ROOT = Path(__file__).resolve().parent.parent


def test_the_sample_config_file_loads() -> None:
    config = load_config(ROOT / "conf" / "querator.toml")
    assert config == Config()


def test_values_must_have_the_type_of_their_key() -> None:
    with pytest.raises(ConfigError, match=r"^wrong type in config; --port is a string \('1'\)"):
        load_config(None, port="1")
    with pytest.raises(ConfigError, match=r"^wrong type in config; --max-batch is a boolean"):
        load_config(None, max_batch=True)


def test_the_origin_of_a_bad_value_is_named(tmp_path: Path) -> None:
    path = tmp_path / "q.toml"
    path.write_text('durability = "never"\n')
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value) == f"invalid setting; {path}: durability is 'never'; allowed: fsync, flush"
    with pytest.raises(ConfigError) as error:
        load_config(path, durability="later")
    assert str(error.value) == "invalid setting; --durability is 'later'; allowed: fsync, flush"


def test_a_user_built_in_code_without_a_password_is_refused() -> None:
    config = Config(requirepass="pw", users=[UserDeclaration(name="anyone")])
    with pytest.raises(ConfigError, match=r"^user without a password; user 'anyone'"):
        Users.from_config(config)


def test_only_nopass_lets_any_password_in() -> None:
    users = Users.from_config(
        Config(
            requirepass="pw",
            users=[UserDeclaration(name="guest", nopass=True), UserDeclaration(name="w", password="s3cret")],
        )
    )
    guest = users.authenticate("guest", b"whatever")
    assert guest is not None and guest.name == "guest"
    assert users.authenticate("w", b"") is None
    assert users.authenticate("w", b"whatever") is None
    assert users.authenticate("w", b"s3cret") is not None
    assert users.nopass_names() == ["guest"]
