"""Checks the rendered overlays of k8s/ (`kubectl kustomize k8s/overlays/<name>`)
against the `faro` binary and against what each overlay promises. In every
overlay: every
container runs a real `faro` subcommand as non-root with a read-only root
filesystem, no privilege escalation, memory requests and limits, and (for the
long-running ones) readiness and liveness probes; every variable the
manifests give a container is one that subcommand reads (from its `--help`,
where clap prints `[env: NAME=...]`), every ConfigMap key is read by some
service, and every Secret key used exists in k8s/base/secrets.example.yaml;
gRPC is never plaintext (no FARO_PLAINTEXT, https:// URLs, a certificate
mounted). In prod: every Deployment has two replicas or more (or an HPA with
minReplicas >= 2) and a PodDisruptionBudget selecting its pods, the ingest
HPA scales on CPU and on the queue depth that
k8s/monitoring/prometheus-adapter-rules.yaml exposes, and the PrometheusRule
holds exactly the groups of k8s/monitoring/faro-alerts.rules.yml. In dev: one
replica each, no PDB, no HPA. The binary links only what the runtime image
(distroless/cc) ships.

  python3 scripts/check_deploy.py FARO dev=RENDERED.yaml prod=RENDERED.yaml"""

import glob
import re
import subprocess
import sys

import yaml

faro = sys.argv[1]
rendered = dict(a.split("=", 1) for a in sys.argv[2:])
problems = []


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def env_of(subcommand):
    out = subprocess.run([faro, subcommand, "--help"], capture_output=True, text=True, check=True).stdout
    names = set(re.findall(r"\[env: ([A-Z0-9_]+)[=\]]", out))
    top = subprocess.run([faro, "--help"], capture_output=True, text=True, check=True).stdout
    return names | set(re.findall(r"\[env: ([A-Z0-9_]+)[=\]]", top))


subcommands = set(
    re.findall(r"^  ([a-z]+)\s", subprocess.run([faro, "--help"], capture_output=True, text=True, check=True).stdout, re.M)
)
secret_keys = set()
for d in load("k8s/base/secrets.example.yaml"):
    secret_keys.update(d.get("stringData", {}))
with open("k8s/monitoring/faro-alerts.rules.yml") as f:
    alert_groups = yaml.safe_load(f)["groups"]
with open("k8s/monitoring/prometheus-adapter-rules.yaml") as f:
    adapter_names = {r["name"]["as"] for r in yaml.safe_load(f)["rules"]["external"]}


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def check_overlay(overlay, ds):
    """The checks of one rendered overlay; returns its container count."""
    config = {}
    for d in ds:
        if d.get("kind") == "ConfigMap":
            config.update(d.get("data", {}))
    for key, value in config.items():
        if key == "FARO_PLAINTEXT":
            problems.append(f"{overlay}: the ConfigMap sets FARO_PLAINTEXT: gRPC must use mTLS")
        if key.endswith("_URL") and not str(value).startswith("https://"):
            problems.append(f"{overlay}: the ConfigMap's {key} is not https:// ({value})")
    read_by_someone = set()
    containers_seen = 0
    deployments = [d for d in ds if d.get("kind") == "Deployment"]
    hpas = {d["spec"]["scaleTargetRef"]["name"]: d for d in ds if d.get("kind") == "HorizontalPodAutoscaler"}
    pdbs = [d for d in ds if d.get("kind") == "PodDisruptionBudget"]
    for d in ds:
        kind = d.get("kind")
        if kind not in ("Deployment", "Job"):
            continue
        pod = d["spec"]["template"]["spec"]
        where = f"{overlay}: {kind} {d['metadata']['name']}"
        psc = pod.get("securityContext", {})
        if not psc.get("runAsNonRoot"):
            problems.append(f"{where}: pod does not set runAsNonRoot")
        for c in pod["containers"]:
            containers_seen += 1
            here = f"{where} container {c['name']}"
            args = c.get("args", [])
            if not args or args[0] not in subcommands:
                problems.append(f"{here}: args {args} do not start with a faro subcommand {sorted(subcommands)}")
                continue
            reads = env_of(args[0])
            sc = c.get("securityContext", {})
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{here}: allowPrivilegeEscalation is not false")
            if not sc.get("readOnlyRootFilesystem"):
                problems.append(f"{here}: root filesystem is writable")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                problems.append(f"{here}: capabilities not dropped")
            res = c.get("resources", {})
            if "memory" not in res.get("requests", {}) or "memory" not in res.get("limits", {}):
                problems.append(f"{here}: no memory request and limit")
            if kind == "Deployment":
                for probe in ("readinessProbe", "livenessProbe"):
                    if probe not in c:
                        problems.append(f"{here}: no {probe}")
                if "FARO_TLS_CERT" in reads and not any(
                    m["mountPath"] == "/etc/faro/tls" for m in c.get("volumeMounts", [])
                ):
                    problems.append(f"{here}: no mTLS certificate mounted at /etc/faro/tls")
            for e in c.get("env", []):
                name = e["name"]
                if name == "FARO_PLAINTEXT":
                    problems.append(f"{here}: sets FARO_PLAINTEXT: gRPC must use mTLS")
                if name not in reads:
                    problems.append(f"{here}: sets {name}, which `faro {args[0]}` does not read")
                else:
                    read_by_someone.add(name)
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["key"] not in secret_keys:
                    problems.append(f"{here}: secret key {ref['key']} is not in secrets.example.yaml")
            if any(s.get("configMapRef") for s in c.get("envFrom", [])):
                read_by_someone.update(k for k in config if k in reads)

    for key in config:
        if key not in read_by_someone:
            problems.append(f"{overlay}: ConfigMap key {key} is read by no service that uses it")
    if containers_seen == 0:
        problems.append(f"{overlay}: no Deployment or Job")

    if overlay == "dev":
        for d in deployments:
            if d["spec"].get("replicas") != 1:
                problems.append(f"dev: Deployment {d['metadata']['name']} has {d['spec'].get('replicas')} replicas, not 1")
        if pdbs or hpas:
            problems.append("dev: has a PodDisruptionBudget or an HPA (one replica: a PDB blocks drains)")
    if overlay == "prod":
        for d in deployments:
            name, labels = d["metadata"]["name"], d["spec"]["template"]["metadata"]["labels"]
            hpa = hpas.get(name)
            least = hpa["spec"].get("minReplicas", 1) if hpa else d["spec"].get("replicas", 1)
            if least < 2:
                problems.append(f"prod: Deployment {name} may run {least} replica(s)")
            if hpa and "replicas" in d["spec"]:
                problems.append(f"prod: Deployment {name} sets replicas, which its HPA owns")
            if not any(matches(p["spec"]["selector"], labels) for p in pdbs):
                problems.append(f"prod: no PodDisruptionBudget selects Deployment {name}")
        metrics = hpas.get("faro-ingest", {}).get("spec", {}).get("metrics", [])
        if not any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in metrics):
            problems.append("prod: the ingest HPA does not scale on CPU")
        external = [m["external"]["metric"]["name"] for m in metrics if m["type"] == "External"]
        if not external:
            problems.append("prod: the ingest HPA does not scale on the queue depth (an External metric)")
        for name in external:
            if name not in adapter_names:
                problems.append(f"prod: the ingest HPA asks for {name}, which prometheus-adapter-rules.yaml does not expose")
        rules = [d for d in ds if d.get("kind") == "PrometheusRule"]
        if len(rules) != 1 or rules[0]["spec"]["groups"] != alert_groups:
            problems.append("prod: the PrometheusRule is missing or differs from faro-alerts.rules.yml "
                            "(python3 scripts/prometheus_rule.py --write)")
    return containers_seen


for overlay in ("dev", "prod"):
    if overlay not in rendered:
        problems.append(f"no rendered {overlay} overlay given")
containers_seen = {o: check_overlay(o, load(path)) for o, path in rendered.items()}

# The runtime image is distroless/cc: glibc (libc, libm, ld-linux), libgcc_s.
shipped = ("linux-vdso.so", "libc.so", "libm.so", "libgcc_s.so", "ld-linux-x86-64.so", "libpthread.so", "libdl.so", "librt.so")
linked = subprocess.run(["ldd", faro], capture_output=True, text=True, check=True).stdout
for line in linked.splitlines():
    lib = line.strip().split(" ")[0].rsplit("/", 1)[-1]
    if lib and not lib.startswith(shipped):
        problems.append(f"faro links {lib}, which the runtime image does not ship")

for p in problems:
    print(f"check-deploy: {p}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"check-deploy: overlays {containers_seen} (containers each): ok")
