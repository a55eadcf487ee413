"""Forecaster shards (issue 16): a stable hash, every policy in exactly one shard, the fair
share, which shards to take and release, and replicas converging through real LeaseHolder
logic on a fake Lease API."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

from scalegate.kube import Conflict
from scalegate.leases import LeaseTimings
from scalegate.shards import (
    Moves,
    ShardKeeper,
    fair_share,
    lease_names,
    member_lease,
    plan_moves,
    shard_lease,
    shard_of,
)

pytestmark = pytest.mark.unit

TIMINGS = LeaseTimings(lease_duration=3.0, renew_deadline=2.0, retry_period=0.5)


# -- the hash ---------------------------------------------------------------------------------
def test_shard_of_is_sha256_of_namespace_slash_name():
    digest = hashlib.sha256(b"shop/web").digest()
    assert shard_of("shop", "web", 8) == int.from_bytes(digest[:8], "big") % 8
    # pinned: a change of the hash would move policies between replicas in a rollout
    assert [shard_of("shop", f"p{i}", 8) for i in range(8)] == [5, 1, 4, 5, 3, 2, 5, 0]
    assert shard_of("shop", "web", 8) == 2


def test_shard_of_is_the_same_in_another_process_with_another_hash_seed():
    names = [("shop", f"policy-{i}") for i in range(20)]
    code = ("from scalegate.shards import shard_of; import json; "
            f"print(json.dumps([shard_of(n, p, 8) for n, p in {names!r}]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "12345"}).stdout
    assert out.strip() == str([shard_of(n, p, 8) for n, p in names]).replace(" ", "").replace(",", ", ")


def test_every_policy_is_in_exactly_one_shard_and_the_shards_are_even():
    shards = 8
    counts = [0] * shards
    for i in range(4000):
        shard = shard_of(f"ns-{i % 37}", f"policy-{i}", shards)
        assert 0 <= shard < shards
        counts[shard] += 1
    assert sum(counts) == 4000
    assert min(counts) > 0.85 * 500 and max(counts) < 1.15 * 500, counts


def test_lease_names_carry_the_shard_count():
    assert shard_lease(3, 8) == "scalegate-forecaster-shard-3-of-8"
    assert member_lease(0, 8) == "scalegate-forecaster-member-0-of-8"
    assert len(set(lease_names(8))) == 16


# -- the fair share -----------------------------------------------------------------------------
@pytest.mark.parametrize("shards, live, share", [
    (8, 1, 8), (8, 2, 4), (8, 3, 3), (8, 4, 2), (8, 5, 2), (8, 8, 1), (8, 9, 1), (8, 0, 8), (1, 3, 1)])
def test_fair_share(shards, live, share):
    assert fair_share(shards, live) == share


def test_fair_share_refuses_no_shards():
    with pytest.raises(ValueError):
        fair_share(0, 1)


# -- take and release ---------------------------------------------------------------------------
def test_alone_a_replica_takes_every_shard():
    assert plan_moves(8, [], {}, "a", []) == Moves(tuple(range(8)), 8)


def test_a_replica_releases_what_a_newcomer_lacks_the_highest_first():
    held = range(8)
    assert plan_moves(8, held, {s: "a" for s in held}, "a", ["b"]) == Moves(release=(7, 6, 5, 4))


def test_the_newcomer_takes_free_shards_up_to_its_share():
    holders = {s: "a" for s in range(4)}  # a released 4..7
    moves = plan_moves(8, [], holders, "b", ["a"])
    assert moves == Moves((4, 5, 6, 7), 4)


def test_nothing_is_released_that_no_one_lacks():
    # three replicas, 8 shards: 3 + 3 + 2; a holds 3 = its share, b 3, c 2 < 3 but a is not above
    holders = {0: "a", 1: "a", 2: "a", 3: "b", 4: "b", 5: "b", 6: "c", 7: "c"}
    assert plan_moves(8, [0, 1, 2], holders, "a", ["b", "c"]) == Moves()
    # above the share but every other replica has its share: keep it (no one would take it)
    holders = {0: "a", 1: "a", 2: "a", 3: "a", 4: "b", 5: "b", 6: "b", 7: "b"}
    assert plan_moves(8, [0, 1, 2, 3], holders, "a", ["b", "c"]) == Moves(release=(3,))  # c lacks 3
    assert plan_moves(8, [0, 1, 2, 3], holders, "a", ["b"]) == Moves()


def test_a_dead_replicas_shards_are_orphans_taken_by_the_survivors():
    holders = {s: ("a" if s < 4 else "dead") for s in range(8)}
    moves = plan_moves(8, range(4), holders, "a", [])  # "dead" no longer renews its slot
    assert moves == Moves((4, 5, 6, 7), 4)


def test_a_shard_held_by_a_replica_that_is_no_member_goes_to_the_one_below_its_share():
    # "ghost" holds shard 7 but renews no membership slot (dead, or lost its slot)
    holders = {0: "a", 1: "a", 2: "a", 3: "a", 4: "b", 5: "b", 6: "b", 7: "ghost"}
    assert plan_moves(8, [0, 1, 2, 3], holders, "a", ["b"]) == Moves()  # a has its share
    assert plan_moves(8, [4, 5, 6], holders, "b", ["a"]) == Moves((7,), 1)  # b lacks one: it is b's


def test_free_shards_are_tried_before_those_of_a_dead_holder():
    holders = {0: "dead", 1: "", 2: "dead", 3: ""}
    assert plan_moves(4, [], holders, "a", []) == Moves((1, 3, 0, 2), 4)


# -- replicas on a fake Lease API ----------------------------------------------------------------
class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Leases:
    """get/create/replace with resourceVersions, as the API server does them."""

    def __init__(self):
        self.objects: dict[str, dict] = {}
        self.version = 0
        self.reads = 0

    def _store(self, name: str, spec: dict, metadata=None) -> dict:
        self.version += 1
        self.objects[name] = {"metadata": {**(metadata or {}), "name": name, "resourceVersion": str(self.version)},
                              "spec": dict(spec)}
        return self.get_lease("scalegate", name, count=False)

    def get_lease(self, namespace: str, name: str, count: bool = True) -> dict | None:
        self.reads += count
        obj = self.objects.get(name)
        return None if obj is None else {"metadata": dict(obj["metadata"]), "spec": dict(obj["spec"])}

    def create_lease(self, namespace: str, name: str, spec: dict, labels=None) -> dict:
        if name in self.objects:
            raise Conflict(f"create lease {name}", "already exists", 409, "AlreadyExists")
        return self._store(name, spec)

    def replace_lease(self, namespace: str, name: str, spec: dict, resource_version: str, metadata=None) -> dict:
        if name not in self.objects or self.objects[name]["metadata"]["resourceVersion"] != resource_version:
            raise Conflict(f"update lease {name}", "modified", 409, "Conflict")
        return self._store(name, spec, metadata)


def keeper(api: Leases, identity: str, clock: Clock, shards: int = 8) -> ShardKeeper:
    return ShardKeeper(api, "scalegate", identity, shards, TIMINGS, clock=clock)  # type: ignore[arg-type]


def run(clock: Clock, keepers: list[ShardKeeper], periods: int) -> None:
    for _ in range(periods):
        for k in keepers:
            k.tick()
        clock.advance(TIMINGS.retry_period)


def assert_partition(keepers: list[ShardKeeper], shards: int = 8) -> None:
    held = [k.held() for k in keepers]
    assert sorted(s for h in held for s in h) == list(range(shards)), held


def test_a_second_replica_gets_half_and_a_dead_ones_shards_move_after_expiry():
    api, clock = Leases(), Clock()
    a, b = keeper(api, "a", clock), keeper(api, "b", clock)
    run(clock, [a], 1)
    assert a.held() == frozenset(range(8))
    run(clock, [a, b], 3)
    assert len(a.held()) == 4 and len(b.held()) == 4
    assert_partition([a, b])
    assert a.live_replicas == b.live_replicas == 2
    # a dies (no more ticks): it stops holding at its renew deadline, b takes over after expiry
    run(clock, [b], 4)  # 2.5 s since a's last renewal: past its renew deadline (2 s), not its lease (3 s)
    assert len(b.held()) == 4 and not a.held()
    run(clock, [b], int(2 * TIMINGS.lease_duration / TIMINGS.retry_period) + 2)
    assert b.held() == frozenset(range(8)) and b.live_replicas == 1


def test_a_policy_is_written_only_by_the_holder_of_its_shard():
    api, clock = Leases(), Clock()
    a, b = keeper(api, "a", clock), keeper(api, "b", clock)
    run(clock, [a, b], 4)
    policies = [{"metadata": {"namespace": f"ns{i % 3}", "name": f"p{i}"}} for i in range(40)]
    mine_a, mine_b = a.mine(policies), b.mine(policies)
    assert len(mine_a) + len(mine_b) == 40 and not {id(p) for p in mine_a} & {id(p) for p in mine_b}
    for body in policies:
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        assert a.holds_policy(ns, name) != b.holds_policy(ns, name)


def test_stopping_releases_so_the_other_takes_over_without_waiting_for_expiry():
    api, clock = Leases(), Clock()
    a, b = keeper(api, "a", clock), keeper(api, "b", clock)
    run(clock, [a, b], 4)
    a.stop()
    assert not a.held()
    run(clock, [b], 2)  # well within the lease duration
    assert b.held() == frozenset(range(8))


def test_three_replicas_split_eight_shards_3_3_2_and_a_fourth_changes_nothing_it_need_not():
    api, clock = Leases(), Clock()
    keepers = [keeper(api, name, clock) for name in "abc"]
    run(clock, keepers, 6)
    assert sorted(len(k.held()) for k in keepers) == [2, 3, 3]
    assert_partition(keepers)


def test_more_replicas_than_shards_the_extra_one_stands_by():
    api, clock = Leases(), Clock()
    keepers = [keeper(api, name, clock, shards=2) for name in "abc"]
    run(clock, keepers, 6)
    assert sorted(len(k.held()) for k in keepers) == [0, 1, 1]
    assert_partition(keepers, shards=2)


# -- the forecaster with shards ------------------------------------------------------------------
def test_a_forecaster_that_lost_the_shard_writes_nothing_about_the_policy(mocker):
    import datetime as dt

    import numpy as np
    import pandas as pd

    from scalegate.forecaster import Forecaster
    from scalegate.kube import Kube, Scale

    now = dt.datetime(2026, 11, 26, 12, 0, 30, tzinfo=dt.timezone.utc)
    index = pd.date_range(end=now - dt.timedelta(minutes=5), periods=4 * 288, freq="5min")
    load = pd.Series(100 + 60 * np.sin(2 * np.pi * (index.hour + index.minute / 60).to_numpy() / 24), index=index)
    source = mocker.Mock()
    source.fetch.return_value = load
    kube = mocker.create_autospec(Kube, instance=True)
    kube.whoami.return_value = "system:serviceaccount:scalegate:forecaster"
    kube.get_scale.return_value = Scale(replicas=1, resource_version="1", uid="uid")
    held = {"value": True}
    forecaster = Forecaster(kube=kube, source=source, clock=lambda: now,
                            may_write=lambda namespace, name: held["value"])
    body = {"metadata": {"name": "web", "namespace": "shop", "uid": "u", "generation": 1},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "minReplicas": 1, "maxReplicas": 50,
                     "forecast": {"query": "load", "capacityPerReplica": 10.0}}}
    assert forecaster.run_policy(body).outcome == "proposed"
    assert kube.create_proposal.call_count == 1 and kube.patch_policy_status.call_count == 1
    held["value"] = False  # the shard moved to another replica during the round
    result = forecaster.run_policy(body)
    assert (result.outcome, result.reason) == ("skipped", "ShardLost")
    assert kube.create_proposal.call_count == 1 and kube.patch_policy_status.call_count == 1
    source.fetch.side_effect = RuntimeError("no Prometheus")  # a failure is not recorded either
    forecaster._kept.clear()
    assert forecaster.run_policy(body).outcome == "failed"
    assert kube.patch_policy_status.call_count == 1


def test_a_policy_new_to_a_replica_keeps_the_rhythm_its_status_says():
    from scalegate.forecaster import first_due

    now = 1_800_000_000.0  # 2027-01-15T08:00:00Z
    body = {"spec": {"forecast": {"intervalSeconds": 900}},
            "status": {"lastForecastTime": "2027-01-15T07:55:00Z"}}
    assert first_due(body, now) == now - 300 + 900
    assert first_due({"spec": {}}, now) == now  # never forecast: now
    assert first_due({**body, "status": {"lastForecastTime": "2099-01-01T00:00:00Z"}}, now) == now + 900
    assert first_due({**body, "status": {"lastForecastTime": "yesterday"}}, now) == now


def test_the_forecasters_role_may_update_exactly_the_leases_of_its_shards():
    from pathlib import Path

    import yaml

    manifests = Path(__file__).resolve().parents[2] / "manifests" / "base"
    deploy = [d for d in yaml.safe_load_all((manifests / "deploy" / "forecaster.yaml").read_text())
              if d["kind"] == "Deployment"][0]
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    shards = int([a for a in args if a.startswith("--shards=")][0].split("=")[1])
    role = [d for d in yaml.safe_load_all((manifests / "rbac" / "forecaster.yaml").read_text())
            if d["kind"] == "Role" and d["metadata"]["name"] == "scalegate-forecaster-shards"][0]
    assert role["metadata"]["namespace"] == "scalegate"
    updates = [r for r in role["rules"] if "update" in r["verbs"]]
    assert len(updates) == 1 and sorted(updates[0]["resourceNames"]) == sorted(lease_names(shards))
    assert all(r["apiGroups"] == ["coordination.k8s.io"] and r["resources"] == ["leases"] for r in role["rules"])


def test_a_policy_whose_status_is_older_than_its_interval_keeps_its_phase():
    # status is rewritten only when its verdict changes or hourly: an old lastForecastTime
    # does not make every policy due at once after a start, each keeps its phase
    from scalegate.forecaster import first_due

    now = 1_800_000_000.0  # 2027-01-15T08:00:00Z
    body = {"spec": {"forecast": {"intervalSeconds": 900}}, "status": {"lastForecastTime": "2027-01-15T06:55:00Z"}}
    assert first_due(body, now) == now + 600  # 06:55 + 5 x 15 min = 08:10
    on_the_beat = {**body, "status": {"lastForecastTime": "2027-01-15T07:00:00Z"}}
    assert first_due(on_the_beat, now) == now
