"""Entity ids: ``generation << 32 | index`` in one int, so they are cheap dict keys."""

from __future__ import annotations

INDEX_BITS = 32
INDEX_MASK = (1 << INDEX_BITS) - 1


def entity_str(entity: int) -> str:
    """``"5v2"``: index 5, generation 2; how entities appear in logs and errors."""
    return f"{entity & INDEX_MASK}v{entity >> INDEX_BITS}"


class EntityNotFoundError(KeyError):
    """The entity was despawned, or the id is stale (its slot now holds a newer entity)."""

    def __str__(self) -> str:
        return f"entity {entity_str(self.args[0])} is not alive (despawned or stale id)"
