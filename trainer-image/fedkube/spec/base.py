"""What every part of the FederatedJob schema shares: camelCase aliases, frozen models, the
CEL rules the CRD carries, and the patterns names must follow."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, JsonValue
from pydantic.alias_generators import to_camel

API_GROUP = "fedkube.io"
API_VERSION = "v1alpha1"
KIND = "FederatedJob"

# A DNS-1123 label: site names become parts of pod names and certificate identities.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
IMPORT_PATH = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


def cel(*rules: tuple[str, str, str | None]) -> ConfigDict:
    """Kubernetes CEL rules (rule, message, fieldPath) for the CRD, mirroring a model's own
    cross-field validator so the API server refuses the same manifests at the door."""
    found: list[JsonValue] = [
        {"rule": r, "message": m, **({"fieldPath": f} if f else {})} for r, m, f in rules
    ]
    return ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        json_schema_extra={"x-kubernetes-validations": found},
    )
