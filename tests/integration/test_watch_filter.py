"""What the operator lists and watches, on the real API server: only proposals that are not
terminal (the CRD's selectable status.phase), and sweeps that page through the rest."""

from __future__ import annotations

import kubernetes
import pytest
from harness import Cluster

from scalegate.kube import Kube
from scalegate.model import GROUP, OPEN_PROPOSALS_FIELD_SELECTOR, PROPOSAL_PLURAL, VERSION, Phase


@pytest.fixture(scope="module", autouse=True)
def _without_admission_policies(cluster):
    """This module tests the CRDs and the watch alone, not the admission policies; an
    earlier module may have left them installed (they would judge labels, proposers and
    who writes status), so they are removed first: no order-dependent results."""
    cluster.ensure_no_admission_policies()

def proposal(name: str, proposer: str) -> dict:
    # Named as its proposer, so that the approval admission policy (if installed) admits it.
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ScalingProposal",
        "metadata": {"name": name, "annotations": {"scalegate.io/proposed-by": proposer}},
        "spec": {"policyRef": {"name": "web"}, "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                                              "name": "web"},
                 "currentReplicas": 2, "replicas": 3, "validUntil": "2099-01-01T00:00:00Z", "reason": "test"},
    }


def create(custom, namespace: str, name: str, phase: str | None) -> None:
    proposer = Kube(custom.api_client).whoami()
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PROPOSAL_PLURAL, proposal(name, proposer))
    if phase:
        set_phase(custom, namespace, name, phase)


def set_phase(custom, namespace: str, name: str, phase: str) -> None:
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PROPOSAL_PLURAL, name,
                                                 {"status": {"phase": phase}})


def open_names(custom, namespace: str) -> set[str]:
    listed = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PROPOSAL_PLURAL,
                                                  field_selector=OPEN_PROPOSALS_FIELD_SELECTOR)
    return {item["metadata"]["name"] for item in listed["items"]}


def test_the_field_selector_keeps_exactly_the_proposals_that_are_not_terminal(cluster: Cluster, namespace: str):
    custom = cluster.custom()
    create(custom, namespace, "no-status-yet", None)
    for phase in (Phase.PENDING, Phase.APPROVED, *sorted(Phase.TERMINAL)):
        create(custom, namespace, phase.lower(), phase)
    assert open_names(custom, namespace) == {"no-status-yet", "pending", "approved"}


def test_a_proposal_that_turns_terminal_leaves_the_watch_and_comes_back_when_reopened(cluster: Cluster,
                                                                                      namespace: str):
    custom = cluster.custom()
    create(custom, namespace, "p", Phase.PENDING)
    resource_version = custom.list_namespaced_custom_object(
        GROUP, VERSION, namespace, PROPOSAL_PLURAL, field_selector=OPEN_PROPOSALS_FIELD_SELECTOR,
    )["metadata"]["resourceVersion"]
    set_phase(custom, namespace, "p", Phase.APPLIED)
    set_phase(custom, namespace, "p", Phase.PENDING)
    # A watch from before both changes replays them as a filtered watcher sees them.
    seen: list[tuple[str, str | None]] = []
    watch = kubernetes.watch.Watch()
    for event in watch.stream(custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PROPOSAL_PLURAL,
                              field_selector=OPEN_PROPOSALS_FIELD_SELECTOR, resource_version=resource_version,
                              timeout_seconds=10):
        seen.append((event["type"], (event["object"].get("status") or {}).get("phase")))
        if len(seen) == 2:
            watch.stop()
    # It learns the proposal is gone, with the last state it matched in, then sees it return.
    assert seen == [("DELETED", Phase.PENDING), ("ADDED", Phase.PENDING)]


@pytest.mark.parametrize("page_size", [2, 500])
def test_sweeps_page_through_every_proposal(cluster: Cluster, namespace: str, page_size: int):
    custom = cluster.custom()
    names = {f"p{i}" for i in range(5)}
    for name in sorted(names):
        create(custom, namespace, name, Phase.EXPIRED)
    kube = Kube(cluster.api_client())
    assert {item["metadata"]["name"] for item in kube.iter_proposals(namespace, page_size=page_size)} == names
