"""The alert rules of k8s/monitoring/faro-alerts.rules.yml as a
PrometheusRule (the Prometheus Operator's resource), for the prod overlay.

The rules file stays the source (promtool checks it, tests/it/monitoring.rs
checks its metrics against a live scrape); this writes its groups, unchanged,
under spec.groups.

  python3 scripts/prometheus_rule.py            # print the PrometheusRule
  python3 scripts/prometheus_rule.py --write    # rewrite the prod overlay's copy
  python3 scripts/prometheus_rule.py --check    # fail if that copy is stale
"""

import sys

import yaml

RULES = "k8s/monitoring/faro-alerts.rules.yml"
OUT = "k8s/overlays/prod/prometheus-rule.yaml"
HEADER = (
    "# GENERATED from k8s/monitoring/faro-alerts.rules.yml by\n"
    "# `python3 scripts/prometheus_rule.py --write`: edit the rules file, not this\n"
    "# (scripts/check-deploy fails when the two differ). The label `release` must\n"
    "# match your Prometheus' ruleSelector (kube-prometheus-stack's default).\n"
)


def block_strings(dumper, data):
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


def resource():
    with open(RULES) as f:
        groups = yaml.safe_load(f)["groups"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "faro-alerts",
            "labels": {"app.kubernetes.io/part-of": "faro", "release": "prometheus"},
        },
        "spec": {"groups": groups},
    }


def render():
    yaml.SafeDumper.add_representer(str, block_strings)
    return HEADER + yaml.safe_dump(resource(), sort_keys=False, width=1000, allow_unicode=True)


def main():
    if "--write" in sys.argv:
        with open(OUT, "w") as f:
            f.write(render())
    elif "--check" in sys.argv:
        with open(OUT) as f:
            committed = yaml.safe_load(f)
        if committed != resource():
            print(f"{OUT} is not the PrometheusRule of {RULES}: "
                  "run `python3 scripts/prometheus_rule.py --write`", file=sys.stderr)
            sys.exit(1)
    else:
        sys.stdout.write(render())


if __name__ == "__main__":
    main()
