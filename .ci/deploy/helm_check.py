"""Helm chart checks for .ci/check-deploy, using Helm's own Go engine without the helm binary.

helm-python-sdk binds libhelm_c, a C ABI over Helm's official Go SDK (helm.sh/helm/v4), so
`lint` and `render` below are Helm's lint and template rendering, not a re-implementation.

  python helm_check.py CHART RAW_DIR OUT_DIR

1. `helm lint --strict` with the default values and with a variant that turns every switch.
2. Renders both (release "rekeyd" and "prod") into OUT_DIR/default.yaml and OUT_DIR/variant.yaml
   for the schema and policy checks that follow in check-deploy.
3. Proves the default render is the same set of objects as the raw manifests in RAW_DIR (the
   resources of its kustomization.yaml), field for field, once Helm's own bookkeeping is set
   aside: the labels helm.sh/chart, app.kubernetes.io/version, app.kubernetes.io/managed-by
   and the pod annotation checksum/policy.
4. Checks that the variant's switches did what they say.
"""

import difflib
import sys
from pathlib import Path

import helm_python
import yaml

HELM_LABELS = {"helm.sh/chart", "app.kubernetes.io/version", "app.kubernetes.io/managed-by"}
HELM_POD_ANNOTATIONS = {"checksum/policy"}

VARIANT = {
    "replicaCount": 1,
    "image": {"digest": "sha256:" + "0" * 64},
    "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/rekeyd"}},
    "vaultKubernetesAuth": {"enabled": True},
    "apiTokens": {"existingSecret": "rekeyd-api-tokens-prod"},
    "networkPolicy": {"enabled": False},
    "serviceMonitor": {"enabled": False},
    "podDisruptionBudget": {"enabled": False},
    "persistence": {"storageClassName": "gp3"},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "podAnnotations": {"example.com/team": "platform"},
}

failures = []


def fail(message):
    failures.append(message)
    print(f"FAIL {message}")


def lint(chart, values, label):
    report = helm_python.lint(chart, values, strict=True)
    for m in report.get("messages", []):
        # Severity 1 is informational ("icon is recommended"); 2 and 3 are warnings and errors.
        if m["severity"] >= 2:
            fail(f"helm lint ({label}): {m['path']}: {m['error']}")
    for e in report.get("errors") or []:
        fail(f"helm lint ({label}): {e}")
    print(f"ok   helm lint --strict ({label})")


def render(chart, values, name):
    with helm_python.Chart.load(chart) as loaded:
        manifests = loaded.render(values, name=name, namespace="rekeyd-ci", is_install=True)
    docs = []
    for path in sorted(manifests):
        if not path.endswith((".yaml", ".yml")):
            continue  # NOTES.txt
        docs.extend(d for d in yaml.safe_load_all(manifests[path]) if d)
    return docs


def key(doc):
    return (doc["kind"], doc["metadata"]["name"])


def strip_helm(node, in_metadata=False):
    """Removes Helm's bookkeeping labels and annotations, wherever metadata appears."""
    if isinstance(node, dict):
        for name, value in list(node.items()):
            if in_metadata and name == "labels" and isinstance(value, dict):
                for label in HELM_LABELS:
                    value.pop(label, None)
            elif in_metadata and name == "annotations" and isinstance(value, dict):
                for annotation in HELM_POD_ANNOTATIONS:
                    value.pop(annotation, None)
            strip_helm(value, in_metadata=(name == "metadata"))
    elif isinstance(node, list):
        for item in node:
            strip_helm(item)


def drop_emptied_pod_annotations(doc):
    meta = doc.get("spec", {}).get("template", {}).get("metadata", {})
    if meta.get("annotations") == {}:
        del meta["annotations"]


def as_text(doc):
    return yaml.safe_dump(doc, sort_keys=True).splitlines(keepends=True)


def main():
    chart, raw_dir, out_dir = (Path(a) for a in sys.argv[1:4])
    out_dir.mkdir(parents=True, exist_ok=True)

    lint(chart, None, "default values")
    lint(chart, VARIANT, "variant values")

    default = render(chart, None, "rekeyd")
    variant = render(chart, VARIANT, "prod")
    for name, docs in (("default", default), ("variant", variant)):
        (out_dir / f"{name}.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
        print(f"ok   helm render ({name}): {len(docs)} objects -> {out_dir / (name + '.yaml')}")

    # 3. Same objects as the raw manifests.
    kustomization = yaml.safe_load((raw_dir / "kustomization.yaml").read_text())
    raw = []
    for resource in kustomization["resources"]:
        raw.extend(d for d in yaml.safe_load_all((raw_dir / resource).read_text()) if d)
    for doc in default:
        strip_helm(doc)
        drop_emptied_pod_annotations(doc)
    rendered = {key(d): d for d in default}
    expected = {key(d): d for d in raw}
    for k in sorted(set(expected) - set(rendered)):
        fail(f"parity: {k[0]} {k[1]} is in {raw_dir} but the chart does not render it")
    for k in sorted(set(rendered) - set(expected)):
        fail(f"parity: the chart renders {k[0]} {k[1]}, which {raw_dir} does not have")
    for k in sorted(set(rendered) & set(expected)):
        if rendered[k] != expected[k]:
            diff = "".join(difflib.unified_diff(as_text(expected[k]), as_text(rendered[k]), f"raw {k}", f"helm {k}"))
            fail(f"parity: {k[0]} {k[1]} differs:\n{diff}")
    if not any(f.startswith("parity") for f in failures):
        print(f"ok   chart defaults render the same {len(expected)} objects as {raw_dir}")

    # 4. The variant's switches.
    by_kind = {}
    for doc in variant:
        by_kind.setdefault(doc["kind"], []).append(doc)
    sts = by_kind["StatefulSet"][0]
    pod = sts["spec"]["template"]["spec"]
    checks = {
        "release prod is named prod-rekeyd": sts["metadata"]["name"] == "prod-rekeyd",
        "replicaCount 1": sts["spec"]["replicas"] == 1,
        "image by digest": pod["containers"][0]["image"].endswith("@sha256:" + "0" * 64),
        "IRSA annotation on the ServiceAccount": by_kind["ServiceAccount"][0]["metadata"]["annotations"]
        == VARIANT["serviceAccount"]["annotations"],
        "Vault token volume mounted": any(v["name"] == "vault-token" for v in pod["volumes"])
        and any(m["name"] == "vault-token" for m in pod["containers"][0]["volumeMounts"]),
        "API server token still not automounted": pod["automountServiceAccountToken"] is False,
        "existing tokens Secret used, none created": "Secret" not in by_kind
        and any(
            s.get("secret", {}).get("name") == "rekeyd-api-tokens-prod"
            for v in pod["volumes"]
            for s in v.get("projected", {}).get("sources", [])
        ),
        "NetworkPolicy, ServiceMonitor, PDB off": not {"NetworkPolicy", "ServiceMonitor", "PodDisruptionBudget"} & set(by_kind),
        "storage class": sts["spec"]["volumeClaimTemplates"][0]["spec"].get("storageClassName") == "gp3",
    }
    for what, ok in checks.items():
        if not ok:
            fail(f"variant: {what}")
    if not any(f.startswith("variant") for f in failures):
        print(f"ok   variant values: {len(checks)} switches render as intended")

    if failures:
        print(f"{len(failures)} Helm check(s) failed", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
