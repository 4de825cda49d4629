"""The model the schema-evolution reliability tests use, at version 2, and its upgrader.

``Card`` version 1 stored ``count`` at the top level; version 2 keeps it in
``data["count"]`` and adds ``label``. ``v1_document`` is what version 1 wrote.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict

from symphony_nb import upgrader


class Card(BaseModel):
    """Version 2 of a small versioned model."""

    model_config = ConfigDict(extra="forbid")
    __schema_version__ = 2

    id: str
    version: int = 0
    label: str
    data: dict[str, Any] = {}


@upgrader(Card, from_version=1)
def count_into_data(doc: dict[str, Any]) -> dict[str, Any]:
    count = doc.pop("count", 0)
    return {**doc, "label": f"card {doc['id']}", "data": {"count": count}}


def v1_document(entity_id: str, count: int, version: int = 1) -> str:
    """The JSON version 1 of ``Card`` stored for one card."""
    return orjson.dumps({"id": entity_id, "version": version, "count": count}).decode()
