"""Every `default:` in the CRDs is the model's default for that field, both ways the model
has one: what parsing assumes when the field is absent, and the typed view's own default.

The API server fills in a CRD's defaults on create; the model must assume the same (a
body without the field: a test, a GitOps manifest, an object stored before the default
existed), or the operator and the API server disagree about a policy (they did: the
default cooldown was 0 in the model and 600 in the CRD). A new default in crds/ without a
model field to match fails here."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

from scalegate.model import Policy, Proposal

CRDS = Path(__file__).resolve().parents[2] / "crds"


def minimal_policy() -> dict:
    return {"metadata": {"name": "web", "namespace": "shop"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "minReplicas": 1, "maxReplicas": 5,
                     "forecast": {"query": "sum(x)", "capacityPerReplica": 10}}}


def minimal_proposal() -> dict:
    return {"metadata": {"name": "web-1", "namespace": "shop"},
            "spec": {"policyRef": {"name": "web"},
                     "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "currentReplicas": 1, "replicas": 2, "validUntil": "2026-11-26T21:30:00Z", "forecast": {}}}


#: kind -> (a minimal body without any defaulted field, its parser)
PARSERS: dict[str, tuple[Callable[[], dict], Callable[[dict], Any]]] = {
    "ScalingPolicy": (minimal_policy, Policy.parse),
    "ScalingProposal": (minimal_proposal, Proposal.parse),
}


def defaults(schema: dict, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(path, default) of every `default:` in an OpenAPI schema."""
    if "default" in schema:
        yield path, schema["default"]
    for name, sub in (schema.get("properties") or {}).items():
        yield from defaults(sub, path + (name,))
    if isinstance(schema.get("items"), dict):
        yield from defaults(schema["items"], path + ("[]",))


def crd_defaults() -> list[tuple[str, tuple[str, ...], Any]]:
    found = []
    for file in sorted(CRDS.glob("*.yaml")):
        for crd in yaml.safe_load_all(file.read_text()):
            for version in crd["spec"]["versions"]:
                for path, value in defaults(version["schema"]["openAPIV3Schema"]):
                    found.append((crd["spec"]["names"]["kind"], path, value))
    return found


def snake(name: str) -> str:
    """proposalTTLSeconds -> proposal_ttl_seconds"""
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name).lower()


def test_the_crds_have_defaults_to_compare():
    paths = {".".join(path) for _, path, _ in crd_defaults()}
    assert {"spec.cooldownSeconds", "spec.proposalTTLSeconds", "spec.forecast.horizonSeconds"} <= paths


@pytest.mark.parametrize("kind, path, default", crd_defaults(),
                         ids=[f"{kind}.{'.'.join(path)}" for kind, path, _ in crd_defaults()])
def test_model_default_is_the_crds(kind, path, default):
    assert path[0] == "spec", f"{kind} has a default outside spec: {'.'.join(path)}"
    assert "[]" not in path, f"{kind}: defaults inside lists are not compared yet: {'.'.join(path)}"
    body_of, parse = PARSERS[kind]
    body = body_of()
    parent = body
    for key in path[:-1]:
        parent = parent.setdefault(key, {})
    assert path[-1] not in parent, "the minimal body must leave the defaulted field out"

    # What parsing assumes when the field is absent.
    view = parse(body)
    for key in path[1:-1]:
        view = getattr(view, snake(key))
    attribute = snake(path[-1])
    assert hasattr(view, attribute), f"{kind}.{'.'.join(path)} has a CRD default but no model field {attribute}"
    parsed = getattr(view, attribute)
    assert parsed == default and isinstance(parsed, bool) == isinstance(default, bool), (
        f"{kind}.{'.'.join(path)}: parsing assumes {parsed!r}, the CRD defaults to {default!r}")

    # The typed view's own default, for objects built in code.
    field = {f.name: f for f in dataclasses.fields(type(view))}[attribute]
    assert field.default == default, (
        f"{kind}.{'.'.join(path)}: {type(view).__name__}.{attribute} defaults to {field.default!r}, "
        f"the CRD to {default!r}")
