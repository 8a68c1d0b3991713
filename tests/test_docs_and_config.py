"""The generated and hand-written references must match the code they describe."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from querator.commands.docgen import render
from querator.config import Config, load_config

ROOT = Path(__file__).resolve().parent.parent


def test_commands_md_is_generated_from_the_current_table() -> None:
    current = (ROOT / "docs" / "commands.md").read_text()
    assert current == render(), "docs/commands.md is stale: run `make docs`"


def test_conf_file_documents_every_key_with_its_default() -> None:
    raw = tomllib.loads((ROOT / "conf" / "querator.toml").read_text())
    defaults = Config()
    documented = {key.replace("-", "_") for key in raw}
    expected = {f.name for f in dataclasses.fields(Config)} - {"queues", "users"}
    assert documented == expected
    for key, value in raw.items():
        assert getattr(defaults, key.replace("-", "_")) == value, key


def test_flags_override_file_which_overrides_defaults(tmp_path: Path) -> None:
    path = tmp_path / "q.toml"
    path.write_text('port = 7000\ndurability = "flush"\n[[queue]]\nname = "jobs"\npartitions = 4\n')
    config = load_config(path, port=7001)
    assert config.port == 7001
    assert config.durability == "flush"
    assert config.backend == "rocksdb"
    assert [(q.name, q.partitions) for q in config.queues] == [("jobs", 4)]
