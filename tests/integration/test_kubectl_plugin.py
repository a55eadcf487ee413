"""`kubectl scalegate` through the real kubectl binary, as people with their own
credentials (client certificates: kubectl passes no --as to a plugin), against the real
API server with the admission policy and RBAC from manifests/."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import select
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from harness import Cluster, load_dir, wait_for
from prometheus_harness import PrometheusHarness, binaries_available

from scalegate.dev import write_kubeconfig
from scalegate.dev.pki import create_pki, issue_client_cert
from scalegate.forecast import load_csv
from scalegate.model import (
    APPROVAL_REF,
    APPROVED,
    APPROVED_BY,
    DECISION_REASON,
    GROUP,
    POLICY_PLURAL,
    PROPOSAL_PLURAL,
    PROPOSED_BY,
    REJECTED,
    REJECTED_BY,
    VERSION,
)
from scalegate.plugin.render import number

FORECASTER = "system:serviceaccount:scalegate:forecaster"
OPERATOR = "system:serviceaccount:scalegate:operator"
POLICY = "scalegate-approval"
QUERY = 'sum(rate(http_requests_total{namespace="shop",app="web"}[5m]))'


# -- helpers ------------------------------------------------------------------------------
def user_kubeconfig(cluster: Cluster, user: str, directory: Path, namespace: str | None = None) -> Path:
    """A kubeconfig with a client certificate for `user`, signed by the dev cluster's CA."""
    if cluster.dev is None:
        pytest.skip("issuing user certificates needs the dev control plane's CA")
    cert, key = issue_client_cert(cluster.dev.pki, user, (), directory)
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    path = write_kubeconfig(directory / f"kubeconfig-{user}", admin["clusters"][0]["cluster"]["server"],
                            cluster.dev.pki.ca_cert, user, client_cert=cert, client_key=key)
    if namespace:
        config = yaml.safe_load(path.read_text())
        config["contexts"][0]["context"]["namespace"] = namespace
        path.write_text(yaml.safe_dump(config))
    return path


class Plugin:
    """Runs `kubectl scalegate ...` with the plugin found on PATH, as kubectl finds plugins."""

    def __init__(self, directory: Path):
        self.bin = directory / "bin"
        self.bin.mkdir(exist_ok=True)
        wrapper = self.bin / "kubectl-scalegate"
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m scalegate.plugin.cli "$@"\n')
        wrapper.chmod(0o755)

    def env(self, kubeconfig: Path | str | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        if kubeconfig:
            env["KUBECONFIG"] = str(kubeconfig)
        return env

    def __call__(self, *args: str, kubeconfig: Path | str | None = None,
                 stdin: str | None = None) -> subprocess.CompletedProcess:
        """Runs it to the end; stdin is a pipe (`stdin` typed into it), never a terminal."""
        return subprocess.run(["kubectl", "scalegate", *args], capture_output=True, text=True,
                              env=self.env(kubeconfig), input=stdin or "", timeout=120)

    def at_terminal(self, *args: str, kubeconfig: Path | str) -> "Terminal":
        """Runs it with a terminal (a pseudo-terminal) as stdin and stderr, as a person does."""
        return Terminal(["kubectl", "scalegate", *args], self.env(kubeconfig))


class Terminal:
    """A process at a pseudo-terminal: stdin and stderr (where questions go) are the
    terminal, stdout a pipe. `expect` reads the terminal up to a text; `type` answers."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=subprocess.PIPE, stderr=slave, env=env, text=True)
        os.close(slave)
        self.seen = ""

    def expect(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.master], [], [], max(left, 0))
            if not ready:
                raise AssertionError(f"{text!r} did not appear on the terminal in {timeout}s; it shows:\n{self.seen}")
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # the process closed the terminal
                chunk = b""
            if not chunk:
                raise AssertionError(f"the terminal closed before {text!r}; it shows:\n{self.seen}")
            self.seen += chunk.decode(errors="replace")
        found = self.seen.index(text) + len(text)
        before, self.seen = self.seen[:found], self.seen[found:]
        return before

    def type(self, line: str) -> None:
        os.write(self.master, (line + "\n").encode())

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        """(exit status, stdout, what the terminal showed after the last expect)."""
        out, _ = self.proc.communicate(timeout=timeout)
        rest = []
        while select.select([self.master], [], [], 0.2)[0]:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                break
            if not chunk:
                break
            rest.append(chunk.decode(errors="replace"))
        os.close(self.master)
        return self.proc.returncode, out, self.seen + "".join(rest)


def grant(cluster: Cluster, namespace: str, user: str, clusterrole: str) -> None:
    cluster.kubectl("create", "rolebinding", f"{clusterrole}-{user}", "-n", namespace,
                    f"--clusterrole={clusterrole}", f"--user={user}")


def wait_allowed(cluster: Cluster, namespace: str, user: str, verb: str, resource: str = PROPOSAL_PLURAL) -> None:
    wait_for(lambda: cluster.kubectl("auth", "can-i", verb, f"{resource}.{GROUP}", "-n", namespace, user=user,
                                     check=False).stdout.strip() == "yes",
             timeout=30, message=f"RBAC to let {user} {verb} {resource}")


def proposal(name: str, *, current: int = 4, replicas: int = 9, proposed_by: str = FORECASTER,
             window_end: dt.datetime | None = None) -> dict:
    end = (window_end or dt.datetime.now(dt.timezone.utc)).replace(microsecond=0)
    start = end - dt.timedelta(days=2)
    stamp = lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ScalingProposal",
        "metadata": {"name": name, "labels": {"scalegate.io/policy": "web"},
                     "annotations": {PROPOSED_BY: proposed_by}},
        "spec": {
            "policyRef": {"name": "web"},
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "currentReplicas": current, "replicas": replicas,
            "validUntil": stamp(end + dt.timedelta(hours=2)),
            "reason": "peak of 410 req/s (95% upper bound) expected in 30m; 9 x 50 req/s covers it",
            "forecast": {
                "model": "holt-winters(additive, seasonal=288)", "query": QUERY,
                "window": {"start": stamp(start), "end": stamp(end), "points": 577},
                "horizonSeconds": 3600, "resolutionSeconds": 300,
                "predictedPeak": 380.0, "peakTime": stamp(end + dt.timedelta(minutes=30)),
                "upperBound": 410.0, "lowerBound": 350.0, "confidence": 0.95, "coverage": 0.94,
                "capacityPerReplica": 50, "backtestError": {"metric": "MASE", "value": 0.61},
            },
        },
    }


def plan(name: str, steps: list[tuple[float, int]], *, current: int = 4, policy: str = "web") -> dict:
    """A plan by the forecaster: (hours from now, replicas) per step, ending an hour after
    the last; each step sized for 45.5 x its replicas. Times in whole seconds."""
    body = proposal(name, current=current, replicas=steps[0][1])
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    at = [now + dt.timedelta(hours=h) for h, _ in steps]
    body["spec"]["schedule"] = [{"at": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "replicas": r, "predictedPeak": 40.0 * r,
                                 "upperBound": 45.5 * r} for t, (_, r) in zip(at, steps, strict=True)]
    body["spec"]["endsAt"] = (at[-1] + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    body["spec"]["reason"] = "plan: " + ", ".join(str(r) for _, r in steps)
    body["spec"]["policyRef"]["name"] = policy
    body["metadata"]["labels"]["scalegate.io/policy"] = policy
    return body


class LocalServer:
    """An HTTP server on 127.0.0.1, in a thread, that answers each GET with
    `answer(path, headers) -> (status, JSON body)`; over TLS with `tls=(cert, key)`."""

    def __init__(self, answer, tls: tuple[Path, Path] | None = None):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                status, body = answer(self.path, self.headers)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakePrometheus(LocalServer):
    """Answers /api/v1/query_range like Prometheus (a daily wave), and records each query."""

    def __init__(self):
        self.queries: list[dict[str, str]] = []
        super().__init__(self.answer)

    def answer(self, path: str, headers) -> tuple[int, bytes]:
        params = {k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlparse(path).query).items()}
        self.queries.append(params)
        start, end, step = float(params["start"]), float(params["end"]), float(params["step"])
        values, t = [], start
        while t <= end:
            values.append([t, str(220 + 150 * math.sin(2 * math.pi * (t % 86400) / 86400))])
            t += step
        return 200, json.dumps({"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {}, "values": values}]}}).encode()


# -- fixtures -----------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def installed(cluster: Cluster):
    with cluster.scalegate_installed():
        yield


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> Plugin:
    return Plugin(tmp_path_factory.mktemp("plugin"))


@pytest.fixture
def shop(cluster: Cluster, namespace: str, tmp_path: Path) -> dict:
    """A namespace with a policy, two proposals by the forecaster, and people:
    alice approves (approver + view), bob only views, erin approves and also proposes."""
    custom = cluster.custom()
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, POLICY_PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ScalingPolicy", "metadata": {"name": "web"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                 "minReplicas": 2, "maxReplicas": 20, "maxStepUp": 5, "maxStepDown": 2, "cooldownSeconds": 600,
                 "forecast": {"query": QUERY, "capacityPerReplica": 50}}})
    forecaster = cluster.custom(FORECASTER)
    forecaster.create_namespaced_custom_object(GROUP, VERSION, namespace, PROPOSAL_PLURAL,
                                               proposal("web-1", window_end=dt.datetime.now(dt.timezone.utc)
                                                        - dt.timedelta(hours=1)))
    forecaster.create_namespaced_custom_object(GROUP, VERSION, namespace, PROPOSAL_PLURAL,
                                               proposal("web-2", current=4, replicas=12))
    for user, roles in (("alice", ["scalegate-approver", "view"]), ("bob", ["view"]),
                        ("erin", ["scalegate-approver", "view"])):
        for role in roles:
            grant(cluster, namespace, user, role)
    cluster.apply_yaml(yaml.safe_dump_all([
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "propose", "namespace": namespace},
         "rules": [{"apiGroups": [GROUP], "resources": [PROPOSAL_PLURAL], "verbs": ["create"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "propose-erin", "namespace": namespace},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "propose"},
         "subjects": [{"kind": "User", "name": "erin", "apiGroup": "rbac.authorization.k8s.io"}]}]))
    wait_allowed(cluster, namespace, "alice", "approve")
    wait_allowed(cluster, namespace, "erin", "approve")
    wait_allowed(cluster, namespace, "erin", "create")
    wait_allowed(cluster, namespace, "bob", "list")  # `view` reaches proposals by aggregation
    people = {user: user_kubeconfig(cluster, user, tmp_path, namespace=namespace)
              for user in ("alice", "bob", "erin", "mallory")}
    return {"ns": namespace, **people}


def annotations(cluster: Cluster, namespace: str, name: str) -> dict:
    return cluster.custom().get_namespaced_custom_object(GROUP, VERSION, namespace, PROPOSAL_PLURAL,
                                                         name)["metadata"]["annotations"]


# -- list ---------------------------------------------------------------------------------
def test_list_prints_a_kubectl_like_table_in_the_contexts_namespace(plugin: Plugin, shop: dict):
    run = plugin("list", kubeconfig=shop["alice"])
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split() == ["NAME", "TARGET", "CURRENT", "PROPOSED", "PHASE", "APPROVED-BY", "AGE"]
    assert [line.split()[:6] for line in lines[1:]] == [
        ["web-1", "Deployment/web", "4", "9", "<none>", "<none>"],
        ["web-2", "Deployment/web", "4", "12", "<none>", "<none>"]]
    # Columns line up, as kubectl's do.
    assert len({line.index("TARGET") if i == 0 else line.index("Deployment/web") for i, line in enumerate(lines)}) == 1


def test_list_output_formats(plugin: Plugin, shop: dict):
    wide = plugin("list", "-o", "wide", kubeconfig=shop["bob"])
    assert wide.returncode == 0, wide.stderr
    assert wide.stdout.splitlines()[0].split()[-7:] == ["POLICY", "VALID-UNTIL", "STEPS", "NEXT-STEP", "ENDS-AT",
                                                        "PROPOSED-BY", "REASON"]
    assert FORECASTER in wide.stdout
    as_json = json.loads(plugin("list", "-o", "json", kubeconfig=shop["bob"]).stdout)
    assert as_json["kind"] == "List" and [i["metadata"]["name"] for i in as_json["items"]] == ["web-1", "web-2"]
    as_yaml = yaml.safe_load(plugin("list", "-o", "yaml", kubeconfig=shop["bob"]).stdout)
    assert as_yaml["items"][1]["spec"]["replicas"] == 12
    names = plugin("list", "-o", "name", "-l", "scalegate.io/policy=web", kubeconfig=shop["bob"]).stdout
    assert names.split() == ["scalingproposal.scalegate.io/web-1", "scalingproposal.scalegate.io/web-2"]


def test_list_namespaces_and_flags(cluster: Cluster, plugin: Plugin, shop: dict):
    ns = shop["ns"]
    # -n and --kubeconfig given as flags (no KUBECONFIG), before or after the subcommand.
    for args in (["list", "-n", ns, "--kubeconfig", str(cluster.kubeconfig)],
                 ["--kubeconfig", str(cluster.kubeconfig), "-n", ns, "list"]):
        run = plugin(*args)
        assert run.returncode == 0 and "web-1" in run.stdout, run.stderr
    empty = plugin("list", "-n", "default", kubeconfig=cluster.kubeconfig)
    assert empty.returncode == 0 and empty.stderr.strip() == "No resources found in default namespace."
    everywhere = plugin("list", "-A", kubeconfig=cluster.kubeconfig)
    assert everywhere.stdout.splitlines()[0].split()[0] == "NAMESPACE"
    assert any(line.split()[:2] == [ns, "web-1"] for line in everywhere.stdout.splitlines())
    # alice may list in her namespace only: the server's refusal, verbatim, exit 1.
    refused = plugin("list", "-A", kubeconfig=shop["alice"])
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr == ('Error from server (Forbidden): scalingproposals.scalegate.io is forbidden: User "alice" '
                              'cannot list resource "scalingproposals" in API group "scalegate.io" at the cluster '
                              "scope\n")
    bad_context = plugin("list", "--context", "nope", kubeconfig=shop["alice"])
    assert bad_context.returncode == 1 and bad_context.stderr == 'error: context "nope" does not exist\n'


# -- show ---------------------------------------------------------------------------------
def test_show_gives_the_evidence(cluster: Cluster, plugin: Plugin, shop: dict):
    ns = shop["ns"]
    body = cluster.custom().get_namespaced_custom_object(GROUP, VERSION, ns, PROPOSAL_PLURAL, "web-1")
    # Status is the operator's record: only its ServiceAccount may write it.
    cluster.custom(OPERATOR).patch_namespaced_custom_object_status(GROUP, VERSION, ns, PROPOSAL_PLURAL, "web-1", {
        "status": {"phase": "Pending", "reason": "AwaitingApproval", "message": "waiting for a decision",
                   "conditions": [{"type": "Approved", "status": "False", "reason": "AwaitingApproval",
                                   "message": "no decision yet",
                                   "lastTransitionTime": body["metadata"]["creationTimestamp"]}]}},
        _content_type="application/merge-patch+json")
    cluster.core().create_namespaced_event(ns, {
        "metadata": {"name": f"web-1.{uuid.uuid4().hex[:8]}"},
        "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ScalingProposal", "name": "web-1",
                           "namespace": ns, "uid": body["metadata"]["uid"]},
        "type": "Normal", "reason": "Proposed", "message": "4 -> 9 replicas proposed",
        "source": {"component": "scalegate-forecaster"}, "count": 1,
        "firstTimestamp": body["metadata"]["creationTimestamp"],
        "lastTimestamp": body["metadata"]["creationTimestamp"]})
    run = plugin("show", "web-1", kubeconfig=shop["alice"])
    assert run.returncode == 0, run.stderr
    out = run.stdout
    for expected in ["Name:         web-1", f"Namespace:    {ns}", "Target:       Deployment/web (apps/v1)",
                     "Change:       4 -> 9 replicas (+5)", f"Proposed by:  {FORECASTER}",
                     "Model:       holt-winters(additive, seasonal=288)", f"Query:       {QUERY}",
                     "(577 points)", "Horizon:     60m", "Interval:    350 - 410 (95% interval)",
                     "Backtest:    MASE 0.61", "Bounds (ScalingPolicy web):", "Replicas:    2 - 20",
                     "ok  2 <= 9 replicas <= 20", "ok  step +5 <= maxStepUp 5", "Phase:       Pending",
                     "Approved", "AwaitingApproval", "Proposed", "4 -> 9 replicas proposed", "scalegate-forecaster",
                     "History (other proposals for Deployment/web):"]:
        assert expected in out, f"{expected!r} missing from:\n{out}"
    history = out.split("History (other proposals for Deployment/web):")[1]
    assert "web-2" in history and "web-1" not in history
    # web-2 steps up by 8 where the policy allows 5: shown as out of bounds.
    assert "OUT step +8 <= maxStepUp 5" in plugin("show", "web-2", kubeconfig=shop["alice"]).stdout


# -- approve and reject -------------------------------------------------------------------
def test_approve_sets_both_annotations_as_the_current_user(cluster: Cluster, plugin: Plugin, shop: dict):
    ns = shop["ns"]
    run = plugin("approve", "web-1", "--reason", "campaign at 21:00", "--ref", "https://git.example/mr/42",
                 kubeconfig=shop["alice"])
    assert run.returncode == 0, run.stderr
    assert run.stdout == "scalingproposal.scalegate.io/web-1 approved as alice\n"
    ann = annotations(cluster, ns, "web-1")
    assert (ann[APPROVED], ann[APPROVED_BY], ann[DECISION_REASON], ann[APPROVAL_REF]) == (
        "true", "alice", "campaign at 21:00", "https://git.example/mr/42")
    again = plugin("approve", "web-1", kubeconfig=shop["alice"])
    assert again.returncode == 0 and again.stdout == "scalingproposal.scalegate.io/web-1 already approved by alice\n"
    listed = plugin("list", kubeconfig=shop["bob"]).stdout.splitlines()
    assert listed[1].split()[:6] == ["web-1", "Deployment/web", "4", "9", "<none>", "alice"]


def test_reject_sets_both_annotations(cluster: Cluster, plugin: Plugin, shop: dict):
    run = plugin("reject", "web-2", "--reason", "too big a step", kubeconfig=shop["erin"])
    assert run.returncode == 0, run.stderr
    assert run.stdout == "scalingproposal.scalegate.io/web-2 rejected as erin\n"
    ann = annotations(cluster, shop["ns"], "web-2")
    assert (ann[REJECTED], ann[REJECTED_BY], ann[DECISION_REASON]) == ("true", "erin", "too big a step")
    assert APPROVED not in ann


def test_denials_are_printed_verbatim_with_a_non_zero_exit(cluster: Cluster, plugin: Plugin, shop: dict):
    ns = shop["ns"]
    # RBAC: bob may look, not decide.
    run = plugin("approve", "web-1", kubeconfig=shop["bob"])
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr == (f'Error from server (Forbidden): scalingproposals.scalegate.io "web-1" is forbidden: User '
                          f'"bob" cannot patch resource "scalingproposals" in API group "scalegate.io" in the '
                          f'namespace "{ns}"\n')
    # The admission policy: erin proposed this one, so she may not approve it.
    cluster.custom("erin").create_namespaced_custom_object(GROUP, VERSION, ns, PROPOSAL_PLURAL,
                                                           proposal("by-erin", proposed_by="erin"))
    run = plugin("approve", "by-erin", kubeconfig=shop["erin"])
    assert run.returncode == 1
    assert run.stderr == ("Error from server (Forbidden): scalingproposals.scalegate.io \"by-erin\" is forbidden: "
                          "ValidatingAdmissionPolicy 'scalegate-approval' with binding 'scalegate-approval' denied "
                          "request: you (erin) proposed this ScalingProposal (scalegate.io/proposed-by), so you "
                          "cannot approve or reject it: ask another approver to decide\n")
    assert APPROVED not in annotations(cluster, ns, "by-erin")
    # A decision is final: erin cannot reject what alice approved.
    assert plugin("approve", "web-1", kubeconfig=shop["alice"]).returncode == 0
    run = plugin("reject", "web-1", "--reason", "changed my mind", kubeconfig=shop["erin"])
    assert run.returncode == 1
    assert run.stderr.startswith("Error from server (Forbidden): scalingproposals.scalegate.io \"web-1\" is forbidden: "
                                 "ValidatingAdmissionPolicy 'scalegate-approval' with binding 'scalegate-approval' "
                                 "denied request: this proposal is already approved by alice and the decision is "
                                 "final: remove scalegate.io/rejected, scalegate.io/rejected-by")


def test_one_line_errors_for_missing_proposal_cluster_and_permission(plugin: Plugin, shop: dict, tmp_path: Path):
    missing = plugin("approve", "nope", kubeconfig=shop["alice"])
    assert missing.returncode == 1
    assert missing.stderr == 'Error from server (NotFound): scalingproposals.scalegate.io "nope" not found\n'
    assert plugin("show", "nope", kubeconfig=shop["alice"]).stderr == missing.stderr

    unreachable = yaml.safe_load(Path(shop["alice"]).read_text())
    import socket
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    unreachable["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    (tmp_path / "down").write_text(yaml.safe_dump(unreachable))
    down = plugin("list", kubeconfig=tmp_path / "down")
    assert down.returncode == 1 and len(down.stderr.splitlines()) == 1
    assert down.stderr.startswith(f"error: cannot reach the Kubernetes API server at https://127.0.0.1:{port}: "
                                  "connection refused")

    nobody = plugin("list", kubeconfig=shop["mallory"])
    assert nobody.returncode == 1
    assert nobody.stderr == (f'Error from server (Forbidden): scalingproposals.scalegate.io is forbidden: User '
                             f'"mallory" cannot list resource "scalingproposals" in API group "scalegate.io" in the '
                             f'namespace "{shop["ns"]}"\n')
    no_file = plugin("list", "--kubeconfig", str(tmp_path / "absent"))
    assert no_file.returncode == 1
    assert no_file.stderr == f"error: stat {tmp_path / 'absent'}: no such file or directory\n"


# -- plans: show, list, approve --all -------------------------------------------------------
def versions(cluster: Cluster, namespace: str) -> dict[str, tuple[str, dict]]:
    """Each proposal's resourceVersion and annotations."""
    items = cluster.custom().list_namespaced_custom_object(GROUP, VERSION, namespace, PROPOSAL_PLURAL)["items"]
    return {i["metadata"]["name"]: (i["metadata"]["resourceVersion"], i["metadata"].get("annotations") or {})
            for i in items}


def test_show_prints_a_plans_schedule_with_its_receipts(cluster: Cluster, plugin: Plugin, shop: dict):
    ns = shop["ns"]
    cluster.custom(FORECASTER).create_namespaced_custom_object(
        GROUP, VERSION, ns, PROPOSAL_PLURAL, plan("web-plan", [(-70 / 60, 9), (-10 / 60, 12), (50 / 60, 14),
                                                               (110 / 60, 10)]))
    body = cluster.custom().get_namespaced_custom_object(GROUP, VERSION, ns, PROPOSAL_PLURAL, "web-plan")
    at = [step["at"] for step in body["spec"]["schedule"]]
    applied = lambda t: (dt.datetime.fromisoformat(t.replace("Z", "+00:00"))  # noqa: E731
                         + dt.timedelta(seconds=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    # The operator's receipts (only its ServiceAccount may write status): two steps applied.
    cluster.custom(OPERATOR).patch_namespaced_custom_object_status(GROUP, VERSION, ns, PROPOSAL_PLURAL, "web-plan", {
        "status": {"phase": "Active", "reason": "StepApplied", "plannedSteps": 4, "nextStepAt": at[2], "steps": [
            {"at": at[0], "replicas": 9, "outcome": "Applied", "appliedAt": applied(at[0]), "previousReplicas": 4},
            {"at": at[1], "replicas": 12, "outcome": "Applied", "appliedAt": applied(at[1]),
             "previousReplicas": 9}]}},
        _content_type="application/merge-patch+json")
    run = plugin("show", "web-plan", kubeconfig=shop["bob"])
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "Change:       4 -> 9 replicas (+5) at the plan's first step" in out
    assert f"Plan:         4 steps every 1h, {at[0]} to " in out and ", 9 - 14 replicas" in out
    assert f"Next step:    step 3 at {at[2]} (in " in out and "): 12 -> 14 replicas" in out
    schedule = out.split("Schedule")[1].split("Bounds")[0].splitlines()[1:]
    assert schedule[0].split() == ["STEP", "AT", "REPLICAS", "PREDICTED-PEAK", "UPPER-BOUND", "OUTCOME", "APPLIED-AT",
                                   "CHANGE"]
    assert [line.split() for line in schedule[1:5]] == [
        ["1", at[0], "9", "360", "409.5", "Applied", applied(at[0]), "4", "->", "9"],
        ["now", "2", at[1], "12", "480", "546", "Applied", applied(at[1]), "9", "->", "12"],
        ["next", "3", at[2], "14", "560", "637"],
        ["4", at[3], "10", "400", "455"]]
    # The policy (maxStepDown 2) would reject this plan whole: shown, with the step that breaks it.
    assert "OUT every step down within maxStepDown 2 (largest -4)" in out
    assert f"OUT step 4 (at {at[3]}): removing 4 replicas exceeds maxStepDown 2" in out
    wide = plugin("list", "-o", "wide", kubeconfig=shop["bob"]).stdout.splitlines()
    header = wide[0].split()
    row = next(line.split() for line in wide if line.startswith("web-plan "))
    assert [row[header.index(c)] for c in ("PHASE", "STEPS", "NEXT-STEP")] == ["Active", "4", at[2]]
    assert next(line.split() for line in wide if line.startswith("web-1 "))[header.index("STEPS")] == "<none>"


def add_pending(cluster: Cluster, namespace: str) -> None:
    """Besides shop's web-1 and web-2: a day's plan for web, a proposal of another policy,
    and one already rejected (not pending: never listed)."""
    forecaster = cluster.custom(FORECASTER)
    forecaster.create_namespaced_custom_object(GROUP, VERSION, namespace, PROPOSAL_PLURAL,
                                               plan("web-plan", [(h, 5 + h % 3) for h in range(24)]))
    other = proposal("api-1")
    other["spec"]["policyRef"]["name"] = other["metadata"]["labels"]["scalegate.io/policy"] = "api"
    forecaster.create_namespaced_custom_object(GROUP, VERSION, namespace, PROPOSAL_PLURAL, other)
    forecaster.create_namespaced_custom_object(GROUP, VERSION, namespace, PROPOSAL_PLURAL, proposal("web-no"))
    cluster.custom("erin").patch_namespaced_custom_object(GROUP, VERSION, namespace, PROPOSAL_PLURAL, "web-no", {
        "metadata": {"annotations": {REJECTED: "true", REJECTED_BY: "erin"}}})


def test_approve_all_as_an_approver_approves_each_pending_proposal(cluster: Cluster, plugin: Plugin, shop: dict):
    ns = shop["ns"]
    add_pending(cluster, ns)
    run = plugin("approve", "--all", "-n", ns, "-l", "scalegate.io/policy=web", "--yes", "--reason", "standup",
                 kubeconfig=shop["alice"])
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == f"3 pending proposals in namespace {ns} matching scalegate.io/policy=web, to approve as alice:"
    assert [line.split()[0] for line in lines[1:5]] == ["NAME", "web-1", "web-2", "web-plan"]
    assert "plan: 24 steps every 1h, 4 -> 5 first, 5 - 7 replicas, ends " in lines[4]
    assert lines[5:] == [f"scalingproposal.scalegate.io/{n} approved as alice" for n in ("web-1", "web-2", "web-plan")]
    assert "3 approved, 0 refused, 0 skipped (of 3 listed)" in run.stderr
    after = versions(cluster, ns)
    for name in ("web-1", "web-2", "web-plan"):
        ann = after[name][1]
        assert (ann[APPROVED], ann[APPROVED_BY], ann[DECISION_REASON]) == ("true", "alice", "standup"), name
    assert APPROVED not in after["api-1"][1] and APPROVED not in after["web-no"][1]  # not selected; not pending
    # Run again: nothing is pending any more.
    again = plugin("approve", "--all", "--yes", kubeconfig=shop["alice"])
    assert again.returncode == 0 and "scalingproposal.scalegate.io/api-1 approved as alice" in again.stdout
    nothing = plugin("approve", "--all", "--yes", kubeconfig=shop["alice"])
    assert (nothing.returncode, nothing.stdout) == (0, "")
    assert nothing.stderr == f"No pending proposals to approve in {ns} namespace.\n"


def test_approve_all_without_the_approve_verb_is_refused_for_each_and_changes_nothing(
        cluster: Cluster, plugin: Plugin, shop: dict):
    """pat may patch proposals (edit rights) but not approve: the API server's admission
    policy refuses every approval, in its own words, and nothing changes."""
    ns = shop["ns"]
    add_pending(cluster, ns)
    cluster.apply_yaml(yaml.safe_dump_all([
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "edit-proposals",
                                                                                     "namespace": ns},
         "rules": [{"apiGroups": [GROUP], "resources": [PROPOSAL_PLURAL], "verbs": ["get", "list", "patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "edit-proposals-pat", "namespace": ns},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "edit-proposals"},
         "subjects": [{"kind": "User", "name": "pat", "apiGroup": "rbac.authorization.k8s.io"}]}]))
    wait_allowed(cluster, ns, "pat", "patch")
    pat = user_kubeconfig(cluster, "pat", shop["alice"].parent, namespace=ns)
    before = versions(cluster, ns)
    run = plugin("approve", "--all", "--yes", kubeconfig=pat)
    assert run.returncode == 1
    assert [line.split()[0] for line in run.stdout.splitlines()[2:]] == ["api-1", "web-1", "web-2", "web-plan"]
    for name in ("api-1", "web-1", "web-2", "web-plan"):
        assert (f"scalingproposal.scalegate.io/{name}: Error from server (Forbidden): scalingproposals.scalegate.io "
                f'"{name}" is forbidden: ValidatingAdmissionPolicy \'{POLICY}\' with binding \'{POLICY}\' denied '
                f"request: pat may not approve or reject ScalingProposals in namespace {ns}: ask an administrator to "
                "bind you to the ClusterRole scalegate-approver (the verb approve on scalingproposals.scalegate.io)"
                "\n") in run.stderr, run.stderr
    assert "0 approved, 4 refused, 0 skipped (of 4 listed)" in run.stderr
    assert versions(cluster, ns) == before  # nothing written, not even a resourceVersion moved


def test_approve_all_asks_at_a_terminal_and_refuses_without_one(cluster: Cluster, plugin: Plugin, shop: dict):
    ns = shop["ns"]
    add_pending(cluster, ns)
    before = versions(cluster, ns)
    piped = plugin("approve", "--all", kubeconfig=shop["alice"], stdin="y\ny\ny\ny\n")
    assert piped.returncode == 1 and "web-plan" in piped.stdout
    assert piped.stderr == ("error: approve --all asks before approving each proposal, and there is no terminal to "
                            "ask on: run it in a terminal, or add --yes to approve the 4 listed above\n")
    assert versions(cluster, ns) == before

    terminal = plugin.at_terminal("approve", "--all", kubeconfig=shop["alice"])
    terminal.expect("approve api-1 (Deployment/web, 4 -> 9 (+5))? [y/n/a/q] ")
    terminal.type("n")
    terminal.expect("approve web-1 (Deployment/web, 4 -> 9 (+5))? [y/n/a/q] ")
    terminal.type("y")
    terminal.expect("approve web-2 (Deployment/web, 4 -> 12 (+8))? [y/n/a/q] ")
    terminal.type("q")
    code, out, shown = terminal.finish()
    assert code == 0, shown
    assert out.splitlines()[-1] == "scalingproposal.scalegate.io/web-1 approved as alice"
    assert "1 approved, 0 refused, 3 skipped (of 4 listed)" in shown
    after = versions(cluster, ns)
    assert after["web-1"][1][APPROVED_BY] == "alice"
    assert {name: after[name] for name in after if name != "web-1"} == {n: before[n] for n in before if n != "web-1"}


# -- explain ------------------------------------------------------------------------------
def test_explain_without_prometheus_sizes_from_the_evidence(plugin: Plugin, shop: dict, tmp_path: Path):
    png = tmp_path / "web-1.png"
    run = plugin("explain", "web-1", "--plot", str(png), kubeconfig=shop["alice"])
    assert run.returncode == 0, run.stderr
    for expected in ["Deployment/web 4 -> 9 replicas", "peak over the next 60m: 380 predicted",
                     "95% prediction interval: 350 .. 410",
                     "410 (upper bound) / 50 per replica -> 9 replicas needed",
                     "proposed 9 x 50 = 450 (+9.8% vs the upper bound)", "now 4 x 50 = 200",
                     "ok  2 <= 9 replicas <= 20", "<not read: pass --prometheus-url URL to see it>"]:
        assert expected in run.stdout, f"{expected!r} missing from:\n{run.stdout}"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_explain_reads_the_proposals_query_over_its_window_from_prometheus(cluster: Cluster, plugin: Plugin,
                                                                          shop: dict, tmp_path: Path):
    body = cluster.custom().get_namespaced_custom_object(GROUP, VERSION, shop["ns"], PROPOSAL_PLURAL, "web-1")
    window = body["spec"]["forecast"]["window"]
    png = tmp_path / "history.png"
    with FakePrometheus() as prometheus:
        run = plugin("explain", "web-1", "--plot", str(png), "--prometheus-url", prometheus.url,
                     kubeconfig=shop["alice"])
    assert run.returncode == 0, run.stderr
    assert len(prometheus.queries) == 1
    asked = prometheus.queries[0]
    assert asked["query"] == QUERY and asked["step"] == "300"
    start = dt.datetime.fromisoformat(window["start"].replace("Z", "+00:00"))
    end = dt.datetime.fromisoformat(window["end"].replace("Z", "+00:00"))
    assert float(asked["start"]) == start.timestamp()
    # On to the end of the horizon (here: now, an hour after the forecast), to show what happened.
    assert end.timestamp() + 3000 < float(asked["end"]) <= end.timestamp() + 3600
    assert "577 samples: last" in run.stdout and "since the forecast: actual peak" in run.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_explain_goes_on_without_history_when_prometheus_is_down(plugin: Plugin, shop: dict):
    run = plugin("explain", "web-1", "--prometheus-url", "http://127.0.0.1:9", kubeconfig=shop["bob"])
    assert run.returncode == 0
    assert run.stderr.startswith("warning: no load history: Prometheus at http://127.0.0.1:9 is unreachable:")
    assert "410 (upper bound) / 50 per replica -> 9 replicas needed" in run.stdout


class BearerTokenProxy(LocalServer):
    """A Prometheus that wants a bearer token, over TLS with its own CA: a reverse proxy on
    127.0.0.1 in front of a real Prometheus (whose own --web.config.file knows basic auth
    and TLS, not bearer tokens). Answers 401 without the token; records what it was asked."""

    def __init__(self, upstream: str, token: str, directory: Path):
        pki = create_pki(directory)
        self.ca, self.upstream, self.token = pki.ca_cert, upstream, token
        self.asked: list[tuple[str, bool]] = []  # (path, authorized)
        super().__init__(self.answer, tls=(pki.serving_cert, pki.serving_key))

    def answer(self, path: str, headers) -> tuple[int, bytes]:
        authorized = headers.get("Authorization") == f"Bearer {self.token}"
        self.asked.append((path, authorized))
        if not authorized:
            return 401, b'{"status":"error","errorType":"unauthorized","error":"bearer token"}'
        try:
            with urllib.request.urlopen(self.upstream + path, timeout=30) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()


@pytest.mark.skipif(not binaries_available(), reason="needs prometheus and promtool (apt-get install prometheus)")
def test_explain_reads_the_history_from_a_prometheus_that_wants_a_bearer_token(cluster: Cluster, plugin: Plugin,
                                                                              shop: dict, tmp_path: Path):
    """With the forecaster's flags, explain reaches a Prometheus behind a token and a
    private CA, and reads exactly the recorded load; without the token or the CA it says
    why and explains without the history."""
    recording = load_csv(load_dir() / "nasa_http_jul95_5min.csv").iloc[: 3 * 288]
    with PrometheusHarness(recording) as prometheus, \
            BearerTokenProxy(prometheus.url, "s3cr3t", tmp_path / "pki") as proxy:
        stored = prometheus.shifted
        end = stored.index[-13].to_pydatetime()  # an hour before the newest sample
        start = end - dt.timedelta(days=2)
        body = proposal("recorded", window_end=end)
        body["spec"]["forecast"].update(query=prometheus.query, window={
            "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "end": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "points": 577})
        cluster.custom(FORECASTER).create_namespaced_custom_object(GROUP, VERSION, shop["ns"], PROPOSAL_PLURAL, body)
        token = tmp_path / "token"
        token.write_text("s3cr3t\n")

        run = plugin("explain", "recorded", "--prometheus-url", proxy.url, "--prometheus-token-file", str(token),
                     "--prometheus-ca-file", str(proxy.ca), "--prometheus-timeout", "20", kubeconfig=shop["alice"])
        assert run.returncode == 0 and run.stderr == "", run.stderr
        window = stored[(stored.index >= start) & (stored.index <= end)]
        assert len(window) == 577
        assert (f"577 samples: last {number(window.iloc[-1])}, max {number(window.max())}" in run.stdout), run.stdout
        assert f"since the forecast: actual peak {number(stored[stored.index > end].max())}" in run.stdout
        assert proxy.asked and all(authorized for _, authorized in proxy.asked)
        assert "timeout=20" in proxy.asked[0][0]

        no_token = plugin("explain", "recorded", "--prometheus-url", proxy.url, "--prometheus-ca-file",
                          str(proxy.ca), kubeconfig=shop["alice"])
        assert no_token.returncode == 0
        assert no_token.stderr.startswith(f"warning: no load history: Prometheus at {proxy.url} refused access "
                                          "(HTTP 401)"), no_token.stderr
        assert "<not read" not in no_token.stdout and "refused access (HTTP 401)" in no_token.stdout

        no_ca = plugin("explain", "recorded", "--prometheus-url", proxy.url, "--prometheus-token-file", str(token),
                       kubeconfig=shop["alice"])
        assert no_ca.returncode == 0
        assert no_ca.stderr.startswith(f"warning: no load history: TLS to Prometheus at {proxy.url} failed "
                                       "(check the CA)"), no_ca.stderr

        missing = plugin("explain", "recorded", "--prometheus-url", proxy.url, "--prometheus-token-file",
                         str(tmp_path / "absent"), kubeconfig=shop["alice"])
        assert missing.returncode == 1
        assert missing.stderr == (f"error: cannot read the Prometheus token file {tmp_path / 'absent'}: "
                                  "No such file or directory\n")
