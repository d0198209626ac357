"""Checks k8s/ against the `faro` binary: every manifest parses; every
container runs a real `faro` subcommand as non-root with a read-only root
filesystem, no privilege escalation, memory requests and limits, and (for the
long-running ones) readiness and liveness probes; every variable the
manifests give a container is one that subcommand reads (from its `--help`,
where clap prints `[env: NAME=...]`), every ConfigMap key is read by some
service, and every Secret key used exists in secrets.example.yaml; the
binary links only what the runtime image (distroless/cc) ships."""

import glob
import re
import subprocess
import sys

import yaml

faro = sys.argv[1]
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
docs = {path: load(path) for path in sorted(glob.glob("k8s/*.yaml"))}
config = {}
secret_keys = set()
for path, ds in docs.items():
    for d in ds:
        if d.get("kind") == "ConfigMap":
            config.update(d.get("data", {}))
        if d.get("kind") == "Secret":
            secret_keys.update(d.get("stringData", {}))

read_by_someone = set()
containers_seen = 0
for path, ds in docs.items():
    for d in ds:
        kind = d.get("kind")
        if kind not in ("Deployment", "Job"):
            continue
        pod = d["spec"]["template"]["spec"]
        where = f"{path}: {kind} {d['metadata']['name']}"
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
            for e in c.get("env", []):
                name = e["name"]
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
        problems.append(f"k8s/config.yaml: {key} is read by no service that uses the ConfigMap")
if containers_seen == 0:
    problems.append("no Deployment or Job found under k8s/")

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
print(f"check-deploy: {len(docs)} manifests, {containers_seen} containers: ok")
