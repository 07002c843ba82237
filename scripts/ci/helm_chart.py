"""Renders and lints the Helm chart with Helm's own engine (helm-python-sdk) and
validates the rendered manifests against the Kubernetes schemas (kubernetes-validate),
offline. Driven by crates/ais/tests/helm_chart.rs, which makes the assertions.

Input on stdin, JSON:
  {"chart": DIR, "release": NAME, "namespace": NS, "kube_versions": ["1.30.0", ...],
   "scenarios": [{"name": ..., "values": {...}}, ...]}

Output on stdout, JSON, one entry per scenario:
  {"scenarios": [{"name", "error": null | "message",
    "lint": {"messages": [...], "errors": [...]},
    "notes": TEXT,
    "documents": [{"template": PATH, "manifest": {...}}],
    "validation": [{"template", "kind", "name", "kube_version",
                    "outcome": "valid" | "invalid" | "no-schema", "detail"}]}]}

A scenario whose render fails has its error and no documents: some scenarios are
meant to fail. Objects whose API Kubernetes does not define (CRDs such as KEDA's
ScaledObject) have no schema here and come back as "no-schema"; the Rust test checks
those field by field.
"""

import json
import sys

import helm_python
import kubernetes_validate
import yaml


def validate(document, kube_version):
    try:
        kubernetes_validate.validate(document, kube_version, strict=True)
        return "valid", ""
    except kubernetes_validate.SchemaNotFoundError as error:
        return "no-schema", str(error)
    except kubernetes_validate.ValidationError as error:
        path = "/".join(str(part) for part in error.path)
        return "invalid", f"{path}: {error.message}"


def scenario(request, chart, item):
    out = {"name": item["name"], "error": None, "documents": [], "validation": [], "notes": ""}
    values = item.get("values") or {}
    lint = helm_python.lint(request["chart"], values, strict=True, namespace=request["namespace"])
    out["lint"] = {"messages": lint.get("messages") or [], "errors": lint.get("errors") or []}
    try:
        rendered = chart.render(
            values, name=request["release"], namespace=request["namespace"], is_install=True
        )
    except helm_python.HelmError as error:
        out["error"] = str(error)
        return out
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            out["notes"] = text
            continue
        for document in yaml.safe_load_all(text):
            if not document:
                continue
            out["documents"].append({"template": template, "manifest": document})
            for kube_version in request["kube_versions"]:
                outcome, detail = validate(document, kube_version)
                out["validation"].append(
                    {
                        "template": template,
                        "kind": document.get("kind"),
                        "name": (document.get("metadata") or {}).get("name"),
                        "kube_version": kube_version,
                        "outcome": outcome,
                        "detail": detail,
                    }
                )
    return out


def main():
    request = json.load(sys.stdin)
    chart = helm_python.Chart.load(request["chart"])
    results = [scenario(request, chart, item) for item in request["scenarios"]]
    json.dump({"scenarios": results}, sys.stdout)


if __name__ == "__main__":
    main()
