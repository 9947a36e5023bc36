"""docs/protocol.md says what the runtime ships: its table of message types is the
generated one, and every schema and hash it quotes is a real type's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgeloop.cli import main
from edgeloop.net import type_table
from edgeloop.net.registry import info
from edgeloop.sim.robots import Command
from tests.conftest import REPO

DOC = REPO / "docs" / "protocol.md"


def test_the_message_type_table_in_the_docs_is_the_generated_one() -> None:
    generated = type_table.markdown(type_table.shipped_registry())
    text = DOC.read_text()
    assert type_table.updated(text, generated) == text, (
        "docs/protocol.md is out of date: run `edgeloop protocol-types --update docs/protocol.md`"
    )


def test_the_table_names_every_shipped_type_and_its_senders() -> None:
    registry = type_table.shipped_registry()
    table = type_table.markdown(registry)
    for name in registry.names():
        found = registry.named(name)
        assert f"| `{name}` | {found.priority.name} |" in table
        assert f"`{found.schema_hash:016x}`" in table
    assert "| `robot.Command` | HIGH | operator, admin |" in table
    assert "| `robot.CommandResult` | HIGH | device |" in table
    assert "`robot_id: str` (entity)" in table


def test_the_hash_example_is_the_real_robot_command() -> None:
    text = DOC.read_text()
    (schema, digest) = re.findall(r"\$ printf '(\{.*?\})' \| sha256sum \| cut -c1-16\n(\w+)", text)[
        0
    ]
    assert schema == info(Command).schema
    assert int(digest, 16) == info(Command).schema_hash


def test_every_frame_quoted_in_the_docs_has_its_types_hash() -> None:
    registry = type_table.shipped_registry()
    text = DOC.read_text()
    quoted = re.findall(r'\["([\w.]+)", ?(?:0x)?"?([0-9a-f]{16})"?', text)
    assert len(quoted) >= 8
    for name, digest in quoted:
        assert int(digest, 16) == registry.named(name).schema_hash, name


def test_protocol_types_prints_the_table_and_updates_a_doc(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["protocol-types"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(type_table.BEGIN)
    stale = tmp_path / "protocol.md"
    stale.write_text(f"before\n{type_table.BEGIN}\n| old |\n{type_table.END}\nafter\n")
    assert main(["protocol-types", "--update", str(stale)]) == 0
    assert stale.read_text() == f"before\n{printed.rstrip()}\nafter\n"
