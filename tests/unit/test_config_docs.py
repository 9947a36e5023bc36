"""docs/config.md documents every key of every section, and nothing stale."""

from __future__ import annotations

import re
import types
import typing
from typing import Any

import pydantic
import pytest

from edgeloop.config import RuntimeConfig, installed_sections
from tests.conftest import REPO

DOCS = (REPO / "docs" / "config.md").read_text()


def _model_in(annotation: Any) -> tuple[type[pydantic.BaseModel] | None, str]:
    """The model an annotation holds (directly or as list items), and the path joiner."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:  # `X | None`: document X's keys
            return _model_in(members[0])
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation, "."
    if typing.get_origin(annotation) is list:
        inner, _ = _model_in(typing.get_args(annotation)[0])
        return inner, "[]."
    return None, ""


def leaf_keys(model: type[pydantic.BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        inner, joiner = _model_in(field.annotation)
        if inner is None:
            keys.append(prefix + name)
        else:
            keys += leaf_keys(inner, prefix + name + joiner)
    return keys


def _docs_section(name: str) -> str:
    match = re.search(rf"^## {name}\n(.*?)(?=^## |\Z)", DOCS, re.MULTILINE | re.DOTALL)
    assert match, f"docs/config.md has no '## {name}' section"
    return match.group(1)


SECTIONS = [("runtime", RuntimeConfig)] + [(s.name, s.model) for s in installed_sections()]


@pytest.mark.parametrize(("name", "model"), SECTIONS, ids=[name for name, _ in SECTIONS])
def test_every_key_is_documented(name: str, model: type[pydantic.BaseModel]) -> None:
    text = _docs_section(name)
    missing = [key for key in leaf_keys(model) if f"`{key}`" not in text]
    assert not missing, f"docs/config.md '## {name}' does not document {missing}"


def test_documented_sections_exist() -> None:
    documented = set(re.findall(r"^## (\w+)$", DOCS, re.MULTILINE))
    assert documented <= {name for name, _ in SECTIONS}
