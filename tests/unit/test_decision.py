"""The pure decision logic, branch by branch: each check either stops the apply with an
Outcome whose message tells a person what happened (with the numbers and names), or
returns None to let the next check run."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from scalegate import decision as d
from scalegate.decision import Outcome, Reason, Recovery
from scalegate.model import DecisionAnnotations, Phase, Policy, Proposal, TargetRef
from scalegate.records import ApplyIntent

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 11, 26, 20, 30, tzinfo=UTC)
VALID_UNTIL = NOW + dt.timedelta(hours=1)  # 21:30:00Z
WEB = TargetRef("apps/v1", "Deployment", "web")
FORECASTER = "system:serviceaccount:scalegate:forecaster"


def decision(**kw) -> DecisionAnnotations:
    values = dict(approved=True, approved_by="alice", rejected=False, rejected_by="", proposed_by=FORECASTER,
                  approval_ref="", reason="")
    values.update(kw)
    return DecisionAnnotations(**values)


def proposal(**kw) -> Proposal:
    values = dict(namespace="shop", name="web-b", uid="uid-b", generation=1, created=NOW - dt.timedelta(minutes=5),
                  policy_name="web", target=WEB, current_replicas=4, replicas=9, valid_until=VALID_UNTIL,
                  reason="peak", decision=decision(), phase=Phase.PENDING)
    values.update(kw)
    return Proposal(**values)


def policy(**kw) -> Policy:
    values = dict(namespace="shop", name="web", uid="uid-p", generation=1, target=WEB, min_replicas=2,
                  max_replicas=20, max_step_up=None, max_step_down=None, cooldown_seconds=0,
                  proposal_ttl_seconds=3600, suspend=False, forecast=None, last_applied_time=None)
    values.update(kw)
    return Policy(**values)


def at(seconds: float) -> dt.datetime:
    return NOW + dt.timedelta(seconds=seconds)


# -- Outcome ----------------------------------------------------------------------------

@pytest.mark.parametrize("phase", Phase.ALL)
def test_outcome_terminal_follows_the_phase(phase):
    assert Outcome(phase, "R", "m").terminal is (phase in Phase.TERMINAL)


# -- check 1: expiry, rejection, supersession -------------------------------------------

@pytest.mark.parametrize(
    "now, expired",
    [
        pytest.param(VALID_UNTIL - dt.timedelta(microseconds=1), False, id="just-before"),
        pytest.param(VALID_UNTIL, True, id="exactly-at-validUntil"),
        pytest.param(VALID_UNTIL + dt.timedelta(days=1), True, id="after"),
    ],
)
def test_expiry(now, expired):
    outcome = d.check_expiry_rejection_supersession(proposal(), now, "web-b")
    if not expired:
        assert outcome is None
        return
    assert (outcome.phase, outcome.reason) == (Phase.EXPIRED, Reason.EXPIRED)
    assert "expired at 2026-11-26T21:30:00Z" in outcome.message
    assert outcome.terminal


def test_expiry_wins_over_rejection_and_supersession():
    p = proposal(decision=decision(approved=False, approved_by="", rejected=True, rejected_by="bob"))
    outcome = d.check_expiry_rejection_supersession(p, VALID_UNTIL, newest_name="web-z")
    assert outcome.reason == Reason.EXPIRED


def test_expiry_message_shows_the_instant_in_utc_even_for_an_offset_valid_until():
    plus_two = dt.timezone(dt.timedelta(hours=2))
    p = proposal(valid_until=VALID_UNTIL.astimezone(plus_two))  # "2026-11-26T23:30:00+02:00", same instant
    expired = d.check_expiry_rejection_supersession(p, VALID_UNTIL, None)
    waiting = d.check_approval(dataclasses.replace(p, decision=decision(approved=False, approved_by="")), NOW)
    assert "2026-11-26T21:30:00Z" in expired.message
    assert "2026-11-26T21:30:00Z" in waiting.message


@pytest.mark.parametrize(
    "rejected_by, reason, expected",
    [
        pytest.param("bob", "", "rejected by bob", id="named"),
        pytest.param("bob", "too many", "rejected by bob: too many", id="with-reason"),
        pytest.param("", "", "rejected by an unnamed user", id="unnamed"),
    ],
)
def test_rejection(rejected_by, reason, expected):
    p = proposal(decision=decision(approved=False, approved_by="", rejected=True, rejected_by=rejected_by,
                                   reason=reason))
    outcome = d.check_expiry_rejection_supersession(p, NOW, "web-b")
    assert (outcome.phase, outcome.reason, outcome.message) == (Phase.REJECTED, Reason.REJECTED_BY_USER, expected)


def test_rejection_wins_over_supersession():
    p = proposal(decision=decision(rejected=True, rejected_by="bob"))
    assert d.check_expiry_rejection_supersession(p, NOW, "web-z").reason == Reason.REJECTED_BY_USER


@pytest.mark.parametrize(
    "newest, superseded",
    [
        pytest.param("web-b", False, id="it-is-the-newest"),
        pytest.param(None, False, id="no-candidates"),
        pytest.param("web-c", True, id="a-newer-one-exists"),
    ],
)
def test_supersession(newest, superseded):
    outcome = d.check_expiry_rejection_supersession(proposal(), NOW, newest)
    if not superseded:
        assert outcome is None
        return
    assert (outcome.phase, outcome.reason) == (Phase.SUPERSEDED, Reason.SUPERSEDED)
    assert "web-c" in outcome.message and "policy web" in outcome.message


@pytest.mark.parametrize(
    "candidates, winner",
    [
        pytest.param([], None, id="empty"),
        pytest.param([("a", at(0))], "a", id="single"),
        pytest.param([("old", at(-60)), ("new", at(0))], "new", id="newest-timestamp-wins"),
        pytest.param([("new", at(0)), ("old", at(-60))], "new", id="order-does-not-matter"),
        pytest.param([("web-a", at(0)), ("web-b", at(0))], "web-b", id="tie-broken-by-greater-name"),
        pytest.param([("web-b", at(0)), ("web-a", at(0))], "web-b", id="tie-either-order"),
        pytest.param([("no-time", None), ("timed", at(-3600))], "timed", id="missing-timestamp-is-oldest"),
        pytest.param([("b", None), ("a", None)], "b", id="all-missing-then-by-name"),
        pytest.param([("z", None), ("a", dt.datetime(1970, 1, 1, tzinfo=UTC))], "a", id="epoch-beats-missing"),
    ],
)
def test_newest_proposal(candidates, winner):
    assert d.newest_proposal(candidates) == winner
    # every reader must agree, whatever the order it lists them in
    assert d.newest_proposal(list(reversed(candidates))) == winner


def test_newest_proposal_accepts_a_generator():
    assert d.newest_proposal((name, at(i)) for i, name in enumerate(["x", "y", "a"])) == "a"


# -- approval ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    "dec, phase, reason, message_part",
    [
        pytest.param(decision(approved=False, approved_by=""), Phase.PENDING, Reason.AWAITING_APPROVAL,
                     "kubectl scalegate approve web-b -n shop", id="not-approved"),
        pytest.param(decision(approved_by=""), Phase.PENDING, Reason.MISSING_APPROVER,
                     "scalegate.io/approved-by is empty", id="approved-without-approved-by"),
        pytest.param(decision(rejected=True, rejected_by="bob"), Phase.REJECTED, Reason.CONFLICTING_DECISION,
                     "both approved and rejected", id="approved-and-rejected"),
        pytest.param(decision(approved_by=FORECASTER), Phase.REJECTED, Reason.SELF_APPROVAL,
                     f"{FORECASTER} proposed this change and cannot also approve it", id="self-approval"),
    ],
)
def test_approval_refusals(dec, phase, reason, message_part):
    outcome = d.check_approval(proposal(decision=dec), NOW)
    assert (outcome.phase, outcome.reason) == (phase, reason)
    assert message_part in outcome.message


@pytest.mark.parametrize("dec", [decision(approved=False, approved_by=""), decision(approved_by="")],
                         ids=["not-approved", "no-approver"])
def test_waiting_for_approval_looks_again_at_expiry(dec):
    outcome = d.check_approval(proposal(decision=dec), NOW)
    assert outcome.requeue_after == 3600.0
    assert not outcome.terminal


def test_waiting_message_says_until_when():
    outcome = d.check_approval(proposal(decision=decision(approved=False, approved_by="")), NOW)
    assert "until 2026-11-26T21:30:00Z" in outcome.message


def test_rejected_without_approval_is_not_a_conflict():
    outcome = d.check_approval(proposal(decision=decision(approved=False, approved_by="", rejected=True)), NOW)
    assert outcome.reason == Reason.AWAITING_APPROVAL


@pytest.mark.parametrize(
    "dec",
    [
        pytest.param(decision(), id="approved-by-a-person"),
        pytest.param(decision(proposed_by=""), id="no-proposer-recorded"),
        pytest.param(decision(approved_by="system:serviceaccount:gitops:pipeline"), id="a-pipeline"),
    ],
)
def test_complete_approval_passes(dec):
    assert d.check_approval(proposal(decision=dec), NOW) is None


def test_approver_not_authorized_names_user_namespace_and_remedy():
    outcome = d.approver_not_authorized("mallory", proposal())
    assert (outcome.phase, outcome.reason) == (Phase.REJECTED, Reason.APPROVER_NOT_AUTHORIZED)
    assert "mallory" in outcome.message and "namespace shop" in outcome.message
    assert "scalegate-approver" in outcome.message and "'approve'" in outcome.message


@pytest.mark.parametrize(
    "ref, expected",
    [("", "approved by alice"), ("https://git.example/mr/42", "approved by alice (https://git.example/mr/42)")],
    ids=["plain", "with-approval-ref"],
)
def test_approved_message(ref, expected):
    assert d.approved_message(proposal(decision=decision(approval_ref=ref))) == expected


# -- check 2: the policy ----------------------------------------------------------------

def test_missing_policy_fails():
    outcome = d.check_policy(proposal(), None, NOW)
    assert (outcome.phase, outcome.reason) == (Phase.FAILED, Reason.POLICY_NOT_FOUND)
    assert "ScalingPolicy web does not exist in namespace shop" in outcome.message


def test_suspended_policy_waits_until_expiry():
    outcome = d.check_policy(proposal(), policy(suspend=True), NOW)
    assert (outcome.phase, outcome.reason) == (Phase.APPROVED, Reason.SUSPENDED)
    assert "policy web is suspended" in outcome.message
    assert outcome.requeue_after == 3600.0
    assert not outcome.terminal


@pytest.mark.parametrize(
    "policy_target, mismatch",
    [
        pytest.param(WEB, False, id="same"),
        pytest.param(TargetRef("apps/v1beta2", "Deployment", "web"), False, id="same-group-other-version"),
        pytest.param(TargetRef("apps/v1", "Deployment", "api"), True, id="other-name"),
        pytest.param(TargetRef("apps/v1", "StatefulSet", "web"), True, id="other-kind"),
        pytest.param(TargetRef("example.com/v1", "Deployment", "web"), True, id="other-group"),
    ],
)
def test_target_must_be_the_same_object(policy_target, mismatch):
    outcome = d.check_policy(proposal(), policy(target=policy_target), NOW)
    if not mismatch:
        assert outcome is None
        return
    assert (outcome.phase, outcome.reason) == (Phase.FAILED, Reason.TARGET_MISMATCH)
    assert "Deployment/web" in outcome.message and policy_target.describe() in outcome.message


def test_mismatched_target_fails_even_when_suspended():
    outcome = d.check_policy(proposal(), policy(suspend=True, target=TargetRef("apps/v1", "Deployment", "x")), NOW)
    assert outcome.reason == Reason.TARGET_MISMATCH


# -- check 3: bounds --------------------------------------------------------------------

@pytest.mark.parametrize(
    "current, replicas, limits, problems",
    [
        pytest.param(4, 9, {}, [], id="inside"),
        pytest.param(4, 2, {}, [], id="exactly-min"),
        pytest.param(4, 20, {}, [], id="exactly-max"),
        pytest.param(4, 1, {}, ["1 is below minReplicas 2"], id="below-min"),
        pytest.param(4, 21, {}, ["21 is above maxReplicas 20"], id="above-max"),
        pytest.param(4, 9, {"max_step_up": 5}, [], id="step-up-exactly-limit"),
        pytest.param(4, 10, {"max_step_up": 5}, ["adding 6 replicas exceeds maxStepUp 5"], id="step-up-too-far"),
        pytest.param(10, 8, {"max_step_down": 2}, [], id="step-down-exactly-limit"),
        pytest.param(10, 7, {"max_step_down": 2}, ["removing 3 replicas exceeds maxStepDown 2"],
                     id="step-down-too-far"),
        pytest.param(10, 3, {"max_step_up": 1}, [], id="step-up-limit-ignores-scale-down"),
        pytest.param(3, 10, {"max_step_down": 1}, [], id="step-down-limit-ignores-scale-up"),
        pytest.param(4, 30, {"max_step_up": 5},
                     ["30 is above maxReplicas 20", "adding 26 replicas exceeds maxStepUp 5"], id="two-problems"),
        pytest.param(10, 0, {"max_step_down": 3},
                     ["0 is below minReplicas 2", "removing 10 replicas exceeds maxStepDown 3"],
                     id="below-min-and-step-down"),
    ],
)
def test_bounds(current, replicas, limits, problems):
    outcome = d.check_bounds(proposal(current_replicas=current, replicas=replicas), policy(**limits))
    if not problems:
        assert outcome is None
        return
    assert (outcome.phase, outcome.reason) == (Phase.REJECTED, Reason.OUT_OF_BOUNDS)
    assert outcome.message == "out of bounds of policy web: " + "; ".join(problems) + " (never clamped)"
    assert outcome.terminal


def test_out_of_bounds_is_never_clamped_into_a_smaller_change():
    # Terminal, no requeue, no alternative number offered: the proposal is refused as a whole.
    outcome = d.check_bounds(proposal(replicas=25), policy())
    assert outcome.terminal and outcome.requeue_after is None
    assert outcome.message == "out of bounds of policy web: 25 is above maxReplicas 20 (never clamped)"


# -- check 4: staleness -----------------------------------------------------------------

@pytest.mark.parametrize("live", [3, 5, 9, 0])
def test_stale_when_the_target_moved(live):
    outcome = d.check_staleness(proposal(current_replicas=4), live)
    assert (outcome.phase, outcome.reason) == (Phase.STALE, Reason.TARGET_CHANGED)
    assert f"Deployment/web now has {live} replicas, not the 4" in outcome.message
    assert "nothing was applied" in outcome.message


def test_not_stale_when_unchanged():
    assert d.check_staleness(proposal(current_replicas=4), 4) is None


# -- check 5: cooldown ------------------------------------------------------------------

@pytest.mark.parametrize(
    "last_applied, cooldown, remaining",
    [
        pytest.param(None, 600, 0.0, id="never-applied"),
        pytest.param(at(-60), 0, 0.0, id="no-cooldown"),
        pytest.param(at(-600), 600, 0.0, id="exactly-over"),
        pytest.param(at(-3600), 600, 0.0, id="long-over"),
        pytest.param(at(-60), 600, 540.0, id="within"),
        pytest.param(at(60), 600, 660.0, id="last-apply-in-the-future"),
    ],
)
def test_cooldown_remaining(last_applied, cooldown, remaining):
    assert d.cooldown_remaining(policy(last_applied_time=last_applied, cooldown_seconds=cooldown), NOW) == remaining


@pytest.mark.parametrize(
    "last_applied",
    [pytest.param(None, id="no-last-apply"), pytest.param(at(-600), id="after-cooldown")],
)
def test_cooldown_passed(last_applied):
    assert d.check_cooldown(proposal(), policy(cooldown_seconds=600, last_applied_time=last_applied), NOW) is None


def test_within_cooldown_waits_approved_until_it_ends():
    outcome = d.check_cooldown(proposal(), policy(cooldown_seconds=600, last_applied_time=at(-60)), NOW)
    assert (outcome.phase, outcome.reason) == (Phase.APPROVED, Reason.COOLDOWN)
    assert outcome.requeue_after == 540.0
    assert "cooldown of policy web to end at 2026-11-26T20:39:00Z" in outcome.message
    assert not outcome.terminal


@pytest.mark.parametrize(
    "cooldown",
    [pytest.param(3600 + 60, id="ends-exactly-at-expiry"), pytest.param(7200, id="ends-after-expiry")],
)
def test_cooldown_ending_at_or_after_expiry_says_so_and_looks_again_at_expiry(cooldown):
    outcome = d.check_cooldown(proposal(), policy(cooldown_seconds=cooldown, last_applied_time=at(-60)), NOW)
    assert (outcome.phase, outcome.reason) == (Phase.APPROVED, Reason.COOLDOWN)
    assert "after this proposal expires" in outcome.message
    assert outcome.requeue_after == 3600.0


# -- check 6: autoscalers ---------------------------------------------------------------

@pytest.mark.parametrize(
    "hpas, expected",
    [
        pytest.param([], [], id="none"),
        pytest.param([("web-hpa", WEB)], ["web-hpa"], id="same"),
        pytest.param([("old", TargetRef("apps/v1beta1", "Deployment", "web"))], ["old"], id="other-version"),
        pytest.param([("api", TargetRef("apps/v1", "Deployment", "api")),
                      ("ss", TargetRef("apps/v1", "StatefulSet", "web"))], [], id="other-targets"),
        pytest.param([("z", WEB), ("a", WEB), ("api", TargetRef("apps/v1", "Deployment", "api"))], ["a", "z"],
                     id="sorted-matches-only"),
        pytest.param([("broken", TargetRef("", "", ""))], [], id="empty-ref"),
    ],
)
def test_autoscaler_targets(hpas, expected):
    assert d.autoscaler_targets(WEB, hpas) == expected


def test_conflicting_autoscaler_fails_and_names_them():
    outcome = d.check_autoscalers(proposal(), ["a", "z"])
    assert (outcome.phase, outcome.reason) == (Phase.FAILED, Reason.CONFLICTING_AUTOSCALER)
    assert "HorizontalPodAutoscaler a, z also manages Deployment/web" in outcome.message


def test_no_autoscaler_passes():
    assert d.check_autoscalers(proposal(), []) is None


# -- applied and recovery ---------------------------------------------------------------

def test_applied_outcome_tells_the_whole_change():
    outcome = d.applied(proposal(), 4, "alice")
    assert (outcome.phase, outcome.reason) == (Phase.APPLIED, Reason.APPLIED)
    assert outcome.message == "scaled Deployment/web from 4 to 9 replicas, approved by alice"
    assert outcome.terminal


def test_applied_names_the_verified_approver_given():
    assert d.applied(proposal(), 4, "bob").message.endswith("approved by bob")


# The intent as the apply wrote it: the target (uid-d) read at generation 7, 4 replicas.
INTENT = ApplyIntent(uid="uid-b", replicas=9, previous_replicas=4, resource_version="100", target_uid="uid-d",
                     target_generation=7, approved_by="alice", started_at=NOW)


@pytest.mark.parametrize(
    "live, generation, verdict",
    [
        pytest.param(4, 7, Recovery.NOT_WRITTEN, id="unchanged-spec-never-landed"),
        pytest.param(9, 8, Recovery.FINISHED, id="landed"),
        pytest.param(9, 12, Recovery.FINISHED, id="landed-then-other-spec-changes"),
    ],
)
def test_recover_intent(live, generation, verdict):
    assert d.recover_intent(proposal(), INTENT, live, "uid-d", generation) == verdict


@pytest.mark.parametrize(
    "live, generation",
    [
        pytest.param(4, 9, id="landed-and-undone"),   # the window of issue 15: never scale again
        pytest.param(4, 8, id="spec-changed-replicas-as-before"),
        pytest.param(6, 8, id="someone-else-scaled"),
    ],
)
def test_recover_intent_fails_closed_when_the_target_changed_otherwise(live, generation):
    outcome = d.recover_intent(proposal(), INTENT, live, "uid-d", generation)
    assert (outcome.phase, outcome.reason) == (Phase.STALE, Reason.TARGET_CHANGED)
    assert outcome.terminal
    assert f"found Deployment/web at {live}" in outcome.message
    assert f"generation 7 -> {generation}" in outcome.message and "cannot be told" in outcome.message


def test_recover_intent_a_replaced_target_is_stale_even_at_the_same_generation():
    outcome = d.recover_intent(proposal(), INTENT, 4, "uid-new", 7)
    assert (outcome.phase, outcome.reason) == (Phase.STALE, Reason.TARGET_CHANGED)
    assert "replaced by another object" in outcome.message


def test_recover_intent_without_a_generation_trusts_only_the_proposed_replicas():
    unknown = dataclasses.replace(INTENT, target_generation=0)
    assert d.recover_intent(proposal(), unknown, 9, "uid-d", 0) == Recovery.FINISHED
    assert d.recover_intent(proposal(), unknown, 4, "uid-d", 0).phase == Phase.STALE


# -- the TTL cap --------------------------------------------------------------------------

def test_valid_until_is_capped_at_creation_plus_the_policy_ttl():
    far = proposal(created=NOW, valid_until=dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC))
    capped = d.with_ttl(far, policy(proposal_ttl_seconds=60))
    assert capped.valid_until == at(60)
    assert d.check_expiry_rejection_supersession(capped, at(60), None).reason == Reason.EXPIRED
    assert d.check_expiry_rejection_supersession(capped, at(59), None) is None


def test_an_earlier_valid_until_stands():
    short = proposal(created=NOW, valid_until=at(30))
    assert d.with_ttl(short, policy(proposal_ttl_seconds=3600)) == short


def test_without_a_policy_the_crds_default_ttl_caps():
    far = proposal(created=NOW, valid_until=at(86400))
    assert d.with_ttl(far, None).valid_until == at(3600)


def test_without_a_creation_time_nothing_is_capped():
    far = proposal(created=None, valid_until=at(86400))
    assert d.with_ttl(far, policy(proposal_ttl_seconds=60)) == far


# -- times out of range -------------------------------------------------------------------

def test_later_answers_none_past_the_last_representable_time():
    assert d.later(dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), 600) is None
    assert d.later(NOW, 10 ** 15) is None
    assert d.later(NOW, 60) == at(60)


def test_a_last_applied_time_out_of_range_fails_the_proposal_clearly():
    broken = policy(cooldown_seconds=600, last_applied_time=dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC))
    assert d.cooldown_remaining(broken, NOW) is None
    outcome = d.check_cooldown(proposal(), broken, NOW)
    assert (outcome.phase, outcome.reason) == (Phase.FAILED, Reason.INVALID_POLICY)
    assert "status.lastAppliedTime 9999-12-31T23:59:59Z plus cooldownSeconds 600" in outcome.message


def test_a_huge_cooldown_is_an_answer_too():
    outcome = d.check_cooldown(proposal(), policy(cooldown_seconds=10 ** 15, last_applied_time=at(-1)), NOW)
    assert outcome.reason == Reason.INVALID_POLICY


# -- one policy per target ----------------------------------------------------------------

def policy_body(name: str, created: str, target: str = "web", kind: str = "Deployment") -> dict:
    return {"metadata": {"name": name, "creationTimestamp": created},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": kind, "name": target}}}


def test_policy_claims_read_what_they_can():
    claims = d.policy_claims([policy_body("a", "2026-11-26T20:00:00Z"), {"metadata": {"name": "b"}, "spec": {}},
                              policy_body("c", "yesterday")])
    assert claims == [("a", dt.datetime(2026, 11, 26, 20, tzinfo=UTC), WEB)]


def test_the_oldest_policy_governs_its_target():
    claims = d.policy_claims([policy_body("web-a", "2026-11-26T20:00:00Z"),
                              policy_body("web-b", "2026-11-26T20:05:00Z"),
                              policy_body("api", "2026-11-26T19:00:00Z", target="api"),
                              policy_body("ss", "2026-11-26T19:00:00Z", kind="StatefulSet")])
    assert d.check_target_claim(policy(name="web-a"), at(-1800), claims) is None
    outcome = d.check_target_claim(policy(name="web-b"), at(-1500), claims)
    assert (outcome.phase, outcome.reason) == (Phase.FAILED, Reason.CONFLICTING_POLICY)
    assert "the older policy web-a already governs" in outcome.message and outcome.terminal


def test_a_tie_in_creation_time_is_broken_by_name():
    claims = d.policy_claims([policy_body("b", "2026-11-26T20:00:00Z"), policy_body("a", "2026-11-26T20:00:00Z")])
    assert d.check_target_claim(policy(name="a"), at(-1800), claims) is None
    assert d.check_target_claim(policy(name="b"), at(-1800), claims).reason == Reason.CONFLICTING_POLICY


def test_a_policy_missing_from_the_list_still_counts_itself():
    assert d.check_target_claim(policy(name="web"), at(-60), []) is None


# -- controller-owned targets -------------------------------------------------------------

def test_a_target_controlled_by_another_object_is_refused():
    outcome = d.check_controller(proposal(target=TargetRef("apps/v1", "ReplicaSet", "web-7f")),
                                 ("Deployment", "web"))
    assert (outcome.phase, outcome.reason) == (Phase.FAILED, Reason.TARGET_MANAGED)
    assert "ReplicaSet/web-7f is controlled by Deployment web" in outcome.message


def test_a_target_without_a_controller_passes():
    assert d.check_controller(proposal(), None) is None
