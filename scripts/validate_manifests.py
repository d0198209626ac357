"""Validates rendered manifests (`kubectl kustomize` output) offline and
strictly: every core resource against the Kubernetes OpenAPI schemas that the
PyPI wheel kubernetes-validate ships (its `-strict` variants: a property the
API does not define is an error), for the oldest and the newest Kubernetes
version FARO's manifests claim; the PrometheusRule, a CRD kubernetes-validate
has no schema for, against k8s/schemas/prometheusrule-monitoring-v1.json.
A kind with no schema at all fails: nothing is skipped silently.

  python3 scripts/validate_manifests.py RENDERED.yaml...
"""

import json
import sys

import jsonschema
import yaml
from kubernetes_validate import utils

# 1.30: the oldest with the preStop `sleep` action on by default.
VERSIONS = ("1.30.0", utils.latest_version())
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "PrometheusRule"): "k8s/schemas/prometheusrule-monitoring-v1.json",
}

problems = []
checked = 0
for path in sys.argv[1:]:
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    for d in docs:
        what = f"{path}: {d.get('kind')} {d.get('metadata', {}).get('name')}"
        crd = CRD_SCHEMAS.get((d.get("apiVersion"), d.get("kind")))
        if crd:
            with open(crd) as f:
                schema = json.load(f)
            errors = list(jsonschema.Draft202012Validator(schema).iter_errors(d))
            problems += [f"{what}: {'.'.join(map(str, e.path))}: {e.message}" for e in errors]
            checked += 1
            continue
        for version in VERSIONS:
            try:
                utils.validate(d, version, strict=True)
            except utils.ValidationError as e:
                problems.append(f"{what} (Kubernetes {version}): {'.'.join(map(str, e.path))}: {e.message}")
            except utils.SchemaNotFoundError as e:
                problems.append(f"{what}: {e.message}")
        checked += 1

for p in problems:
    print(f"validate: {p}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"validate: {checked} resources valid (Kubernetes {', '.join(VERSIONS)}, strict)")
