"""`kubectl explain` has words for every field of every fedkube CRD: each property of each
schema has a description, taken from the pydantic models (issue 28). (The kube tests apply
these CRDs to a real API server, which refuses a metadata schema with more than its type.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fedkube_operator import crd


def _fields(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, prop in (schema.get("properties") or {}).items():
        here = f"{path}.{name}"
        yield here, prop
        yield from _fields(prop, here)
        if isinstance(prop.get("items"), dict):
            yield from _fields(prop["items"], f"{here}[]")
        if isinstance(prop.get("additionalProperties"), dict):
            yield from _fields(prop["additionalProperties"], f"{here}{{}}")


@pytest.mark.parametrize(
    ("make", "at_least"), [(crd.crd, 150), (crd.approval_crd, 8), (crd.site_crd, 40)]
)
def test_every_field_has_a_description(make: Any, at_least: int) -> None:
    doc = make()
    schema = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    fields = list(_fields(schema, doc["spec"]["names"]["kind"]))
    assert len(fields) >= at_least  # the walk reached the nested fields
    # metadata is ObjectMeta: the API server refuses a schema that says more than its type.
    assert schema["properties"]["metadata"] == {"type": "object"}
    undescribed = [p for p, prop in fields if not str(prop.get("description", "")).strip()]
    assert undescribed == [f"{doc['spec']['names']['kind']}.metadata"]
