"""Cross-object checks that schema validators cannot make, for .ci/check-deploy.

  python wiring_check.py FILE...   (all the objects of one deployment, in any files)

A schema says each object is well formed; these say the objects fit together and fit the
policy they ship: every selector selects the pods, every named port and referenced object
exists, the ServiceMonitor finds the Service, and the policy's [api] listen port, state_dir
and tokens_file are where the manifests put the port, the writable volume and the Secret.
"""

import sys
import tomllib
from pathlib import PurePosixPath

import yaml

problems = []


def check(ok, message):
    if not ok:
        problems.append(message)


def subset(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def main(paths):
    docs = [d for p in paths for d in yaml.safe_load_all(open(p)) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    (sts,) = by_kind["StatefulSet"].values()
    pod = sts["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    (container,) = spec["containers"]
    port_names = {p["name"]: p["containerPort"] for p in container.get("ports", [])}

    check(subset(sts["spec"]["selector"]["matchLabels"], pod_labels), "StatefulSet selector does not select its pods")
    check(spec.get("terminationGracePeriodSeconds", 30) >= 60, "terminationGracePeriodSeconds < 60: SIGTERM drain is cut short")
    check(sts["spec"]["serviceName"] in by_kind.get("Service", {}), "StatefulSet serviceName names no Service")
    sa = spec.get("serviceAccountName")
    check(sa in by_kind.get("ServiceAccount", {}), f"serviceAccountName {sa} names no ServiceAccount here")
    for name, probe in (("startup", "startupProbe"), ("liveness", "livenessProbe"), ("readiness", "readinessProbe")):
        get = container.get(probe, {}).get("httpGet", {})
        check(get.get("port") in port_names, f"{name} probe port {get.get('port')} is not a container port")
    check(container.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz", "liveness probe is not /healthz")
    check(container.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz", "readiness probe is not /readyz")

    for svc in by_kind.get("Service", {}).values():
        check(subset(svc["spec"]["selector"], pod_labels), f"Service {svc['metadata']['name']} selects no rekeyd pod")
        for p in svc["spec"]["ports"]:
            check(p["targetPort"] in port_names or p["targetPort"] in port_names.values(),
                  f"Service port {p['name']} targets {p['targetPort']}, not a container port")
    for pdb in by_kind.get("PodDisruptionBudget", {}).values():
        check(subset(pdb["spec"]["selector"]["matchLabels"], pod_labels), "PodDisruptionBudget selects no rekeyd pod")
    for np in by_kind.get("NetworkPolicy", {}).values():
        check(subset(np["spec"]["podSelector"]["matchLabels"], pod_labels), "NetworkPolicy selects no rekeyd pod")
        ingress_ports = {p["port"] for rule in np["spec"].get("ingress", []) for p in rule.get("ports", [])}
        check(ingress_ports <= set(port_names.values()) | set(port_names), f"NetworkPolicy admits ports {ingress_ports} rekeyd does not listen on")
    for sm in by_kind.get("ServiceMonitor", {}).values():
        selected = [s for s in by_kind.get("Service", {}).values() if subset(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
        check(selected, "ServiceMonitor selects no Service")
        for ep in sm["spec"]["endpoints"]:
            check(any(ep["port"] in {p["name"] for p in s["spec"]["ports"]} for s in selected),
                  f"ServiceMonitor endpoint port {ep['port']} is not a port of the selected Service")
            check(ep.get("path") == "/metrics", "ServiceMonitor does not scrape /metrics")

    # Mounted files: path in the container -> (kind, object name, key).
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    files = {}
    for vol in spec["volumes"]:
        mount = mounts.get(vol["name"])
        if not mount:
            continue
        for src in vol.get("projected", {}).get("sources", []):
            for kind in ("configMap", "secret"):
                if kind in src:
                    for item in src[kind]["items"]:
                        files[str(PurePosixPath(mount["mountPath"]) / item["path"])] = (kind, src[kind]["name"], item["key"])
    writable = [m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")]
    check(container["securityContext"].get("readOnlyRootFilesystem") is True, "root filesystem is writable")

    policy_arg = container["args"][container["args"].index("--policy") + 1]
    check(policy_arg in files and files[policy_arg][0] == "configMap", f"--policy {policy_arg} is not a mounted ConfigMap key")
    kind, name, key = files.get(policy_arg, ("configMap", None, None))
    cm = by_kind.get("ConfigMap", {}).get(name)
    check(cm is not None, f"the policy's ConfigMap {name} is not here")
    if cm is not None:
        policy = tomllib.loads(cm["data"][key])
        state_dir = policy.get("daemon", {}).get("state_dir", "")
        check(state_dir in writable, f"state_dir {state_dir!r} is not the writable volume ({writable})")
        api = policy.get("api", {})
        host, _, port = api.get("listen", "").rpartition(":")
        check(host == "0.0.0.0", f"[api] listen {api.get('listen')!r}: probes and the Service need 0.0.0.0")
        check(port_names.get("http") == int(port or 0), f"[api] listen port {port} is not the container port http")
        tokens = api.get("tokens_file")
        check(tokens in files and files[tokens][0] == "secret", f"[api] tokens_file {tokens} is not a mounted Secret key")
        if tokens in files:
            secret = files[tokens][1]
            check(secret in by_kind.get("Secret", {}), f"tokens Secret {secret} is not here")

    for p in problems:
        print(f"FAIL {p}")
    if problems:
        sys.exit(1)
    print(f"ok   wiring: {len(docs)} objects fit together and fit their policy ({', '.join(paths)})")


if __name__ == "__main__":
    main(sys.argv[1:])
