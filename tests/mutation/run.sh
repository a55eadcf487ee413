#!/usr/bin/env bash
# Mutation testing of scalegate's core with mutmut, against the unit tests. On demand, not
# in CI (a full run takes tens of minutes on 2 cores):
#
#   bash tests/mutation/run.sh                      # every target: rules model decision reconciler kube
#   bash tests/mutation/run.sh rules model          # some of them
#   MUTATION_JOBS=2 bash tests/mutation/run.sh      # parallel mutants (default 1)
#   MUTATION_SAMPLE=4 bash tests/mutation/run.sh    # one mutant in 4, chosen by a hash of its name
#
# Targets: rules.py, model.py, decision.py and reconciler.py whole; of kube.py the apply
# path only (the functions in KUBE_APPLY_PATH below: what the operator calls from reading a
# proposal to writing the scale and the receipts, and how errors are classified).
#
# It works on a snapshot: the package is copied to $MUTATION_DIR/src/scalegate (mutmut wants
# a src/ layout, and its mutants/ directory stays out of the checkout), with the tests,
# crds/, manifests/ and pyproject.toml plus tests/mutation/mutmut.toml. Prints mutmut's
# summary, the surviving mutants with their diffs, and the score (killed + timeout) / all,
# and writes the same to $MUTATION_DIR/report.txt.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
WORK=${MUTATION_DIR:-${TMPDIR:-/tmp}/scalegate-mutation}
JOBS=${MUTATION_JOBS:-1}
SAMPLE=${MUTATION_SAMPLE:-1}
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(rules model decision reconciler kube)

# The apply path of kube.py, as mutmut names its functions (x_NAME, xǁCLASSǁMETHOD): the
# plumbing every call goes through (one request, errors), and what the operator calls from
# reading a proposal to its receipts: the proposal, its policy's other proposals, the
# approver's review, the policy, the target and its scale, HPAs, the records (intent,
# outcome), the scale write, both statuses, the label and the Events. Left out: credentials,
# the forecaster's and the plugin's calls, the garbage collector's list and delete.
KUBE_APPLY_PATH=(
  "x_error_from_response" "x__unreachable" "xǁKubeErrorǁ*" "xǁScaleǁ*" "xǁTargetObjectǁ*"
  "xǁKubeǁ_raw" "xǁKubeǁ_custom_path" "xǁKubeǁ_get" "xǁKubeǁget_proposal" "xǁKubeǁget_policy"
  "xǁKubeǁlist_policy_proposals" "xǁKubeǁlist_policy_proposal_metadata" "xǁKubeǁlabel_proposal"
  "xǁKubeǁpatch_proposal_annotations" "xǁKubeǁpatch_proposal_status" "xǁKubeǁpatch_policy_status"
  "xǁKubeǁ_resource" "xǁKubeǁ_scale_path" "xǁKubeǁget_target" "xǁKubeǁget_scale"
  "xǁKubeǁupdate_scale" "xǁKubeǁautoscalers" "xǁKubeǁuser_may_approve" "xǁKubeǁemit_event"
)

"$PYTHON" -c "import mutmut" 2>/dev/null || {
  echo "mutmut is missing: $REPO/.venv/bin/pip install -e '$REPO[test]'" >&2; exit 2; }

echo "# snapshot of $REPO in $WORK"
rm -rf "$WORK"
mkdir -p "$WORK/src"
# Every file git knows of or would add (the work in progress of others included), without
# the package's own directory: it moves to src/scalegate.
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard) \
  | (cd "$REPO" && xargs -0 -r sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh) \
  | (cd "$REPO" && tar --null -T - -cf -) | tar -xf - -C "$WORK"
mv "$WORK/operator/scalegate" "$WORK/src/scalegate"
rm -rf "$WORK/src/scalegate/dev/install"   # symlinks to crds/ and manifests/, which are copied as such
cp "$REPO/pyproject.toml" "$WORK/pyproject.toml"
{
  echo
  cat "$REPO/tests/mutation/mutmut.toml"
  # mutmut copies these next to its mutated src/: everything the tests read.
  printf 'also_copy = ['
  sep=""
  for entry in "$WORK"/* "$WORK"/.[!.]*; do
    name=$(basename "$entry")
    case "$name" in src|mutants|pyproject.toml|'.[!.]*') continue ;; esac
    [ -e "$entry" ] || continue
    printf '%s"%s"' "$sep" "$name"; sep=", "
  done
  echo ']'
  printf 'only_mutate = ['
  sep=""
  for target in "${TARGETS[@]}"; do printf '%s"src/scalegate/%s.py"' "$sep" "$target"; sep=", "; done
  echo ']'
} >> "$WORK/pyproject.toml"

# Pre-flight: the selected tests on the unmutated snapshot. A test that already fails there
# (others' work in progress caught half-way) would "kill" every mutant it covers, so it is
# left out of this run, and the report says which.
"$PYTHON" - "$WORK" <<'PY'
import re, subprocess, sys, tomllib
from pathlib import Path
import xml.etree.ElementTree as ET

work = Path(sys.argv[1])
pyproject = work / "pyproject.toml"
selection = tomllib.loads(pyproject.read_text())["tool"]["mutmut"]["pytest_add_cli_args_test_selection"]
report = work / "preflight.xml"
subprocess.run([sys.executable, "-m", "pytest", *selection, f"--junitxml={report}"], cwd=work,
               env={**__import__("os").environ, "PYTHONPATH": str(work / "src")}, capture_output=True)
failing = []
for case in ET.parse(report).getroot().iter("testcase"):
    if case.find("failure") is not None or case.find("error") is not None:
        module = case.get("classname", "").replace(".", "/")
        failing.append(f"{module}.py::{case.get('name')}")
(work / "preflight-failing.txt").write_text("".join(f"{t}\n" for t in failing))
if failing:
    print(f"# left out, failing before any mutation: {', '.join(failing)}")
    text = pyproject.read_text()
    extra = "".join(f'    "--deselect={t}",\n' for t in failing)
    text = re.sub(r"(pytest_add_cli_args_test_selection = \[\n)", lambda m: m.group(1) + extra, text, count=1)
    pyproject.write_text(text)
PY

# Mutant names to run: every mutant of the whole-file targets, and kube's apply path.
NAMES=()
for target in "${TARGETS[@]}"; do
  if [ "$target" = kube ]; then
    for fn in "${KUBE_APPLY_PATH[@]}"; do NAMES+=("scalegate.kube.${fn}__mutmut_*"); done
  else
    NAMES+=("scalegate.${target}.*")
  fi
done

cd "$WORK"
if [ "$SAMPLE" -gt 1 ]; then
  # Generate the mutants and the test statistics (a filter that matches nothing stops
  # mutmut right after), then keep the mutants whose name hashes to 0 modulo SAMPLE: the
  # same ones every time, spread over every function.
  "$PYTHON" -m mutmut run --max-children "$JOBS" "no-mutant-is-called-this" >/dev/null 2>&1 || true
  mapfile -t NAMES < <("$PYTHON" - "$SAMPLE" "${NAMES[@]}" <<'PY'
import fnmatch, hashlib, subprocess, sys

sample, patterns = int(sys.argv[1]), sys.argv[2:]
lines = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"],
                       capture_output=True, text=True, check=True).stdout.splitlines()
for line in lines:
    name = line.strip().rpartition(": ")[0]
    if name and any(fnmatch.fnmatch(name, p) for p in patterns) \
            and int(hashlib.sha1(name.encode()).hexdigest(), 16) % sample == 0:
        print(name)
PY
)
  echo "# sampled ${#NAMES[@]} mutants (one in $SAMPLE)"
fi
echo "# mutmut run over: ${TARGETS[*]} ($JOBS at a time)"
started=$(date +%s)
# mutmut exits non-zero when mutants survive; the report below is what counts.
"$PYTHON" -m mutmut run --max-children "$JOBS" "${NAMES[@]}" || true
elapsed=$(( $(date +%s) - started ))

"$PYTHON" - "$elapsed" "$WORK/preflight-failing.txt" "${NAMES[@]}" <<'PY' | tee "$WORK/report.txt"
import fnmatch, subprocess, sys
from collections import Counter

elapsed, preflight, patterns = int(sys.argv[1]), open(sys.argv[2]).read().split(), sys.argv[3:]
lines = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"],
                       capture_output=True, text=True, check=True).stdout.splitlines()
status = {}
for line in lines:
    name, _, state = line.strip().rpartition(": ")
    if name and any(fnmatch.fnmatch(name, p) for p in patterns):
        status[name] = state
counts = Counter(status.values())
by_module = {}
for name, state in status.items():
    module = name.split(".")[1]
    by_module.setdefault(module, Counter())[state] += 1
total = len(status)
killed = counts["killed"] + counts["timeout"]
print(f"mutants: {total} in {elapsed}s; " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
for module, c in sorted(by_module.items()):
    n = sum(c.values())
    print(f"  {module:<11} {n:>5} mutants, killed {c['killed'] + c['timeout']:>5}, survived {c['survived']:>4}, "
          f"no tests {c['no tests']:>4}, other {n - c['killed'] - c['timeout'] - c['survived'] - c['no tests']}")
sample = int(__import__("os").environ.get("MUTATION_SAMPLE") or 1)
print(f"score: {killed}/{total} = {100 * killed / max(1, total):.1f}% (killed + timeout over all"
      + (f"; a sample of one mutant in {sample})" if sample > 1 else ")"))
if preflight:
    print("left out (failing before any mutation): " + ", ".join(preflight))
for name, state in sorted(status.items()):
    if state in ("survived", "no tests", "suspicious"):
        print(f"\n## {name}: {state}")
        print(subprocess.run([sys.executable, "-m", "mutmut", "show", name], capture_output=True, text=True).stdout)
PY
