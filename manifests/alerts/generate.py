"""Write manifests/components/alerts/prometheusrule.yaml from manifests/alerts/scalegate-rules.yaml.

The rules file is the one source of scalegate's alerts; the PrometheusRule carries the same
groups for clusters that run the Prometheus operator. Run after changing the rules:

    python3 manifests/alerts/generate.py

tests/unit/test_alert_rules.py fails while the two differ. Standard library only, and the
rules' text is copied line by line (comments and all), not re-serialised.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RULES = HERE / "scalegate-rules.yaml"
PROMETHEUS_RULE = HERE.parent / "components" / "alerts" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from manifests/alerts/scalegate-rules.yaml by manifests/alerts/generate.py: do not
# edit; change the rules file and run `python3 manifests/alerts/generate.py`.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: scalegate
  namespace: scalegate
  labels:
    app.kubernetes.io/name: scalegate
    app.kubernetes.io/component: alerts
spec:
"""


def render(rules_text: str) -> str:
    """The PrometheusRule: the rules file from its `groups:` line on, under `spec:`."""
    lines = rules_text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("groups:"))
    body = "".join(f"  {line}\n" if line.strip() else "\n" for line in lines[start:])
    return HEADER + body


def main() -> int:
    PROMETHEUS_RULE.write_text(render(RULES.read_text()))
    print(f"wrote {PROMETHEUS_RULE.relative_to(HERE.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
