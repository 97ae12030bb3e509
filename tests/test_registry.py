"""The one registry of models and spaces: duplicates refused, unknown names listed, and
temporary entries that leave nothing behind.

Usage: ``python -m pytest tests/test_registry.py`` (no Ray, no torch).
"""

from __future__ import annotations

import pytest

from trainables.registry import Registry, UnknownNameError


def test_registry_rejects_duplicate_names() -> None:
    reg: Registry[int] = Registry("thing")
    reg.add("a", 1)
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("a", 2)
    with pytest.raises(UnknownNameError, match="known things: a"):
        reg.get("b")


def test_a_temporary_entry_is_registered_inside_the_block_only() -> None:
    reg: Registry[int] = Registry("thing")
    reg.add("a", 1)
    with reg.temporarily("b", 2) as obj:
        assert obj == 2 and reg.get("b") == 2 and reg.names() == ["a", "b"]
    assert "b" not in reg and reg.names() == ["a"]


def test_a_temporary_entry_is_removed_when_the_block_raises() -> None:
    reg: Registry[int] = Registry("thing")
    with pytest.raises(RuntimeError, match="boom"), reg.temporarily("b", 2):
        raise RuntimeError("boom")
    assert reg.names() == []


def test_a_temporary_entry_cannot_shadow_a_registered_one() -> None:
    reg: Registry[int] = Registry("thing")
    reg.add("a", 1)
    with pytest.raises(ValueError, match="registered twice"), reg.temporarily("a", 2):
        pass
    assert reg.get("a") == 1
