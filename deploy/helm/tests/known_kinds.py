#!/usr/bin/env python3
"""Splits rendered manifests for kubernetes-validate: writes the objects of
built-in Kubernetes kinds to OUT and names, on stdout, each object of a
CRD kind the validator has no schema for (Gateway API HTTPRoute, the
Prometheus Operator's ServiceMonitor), so nothing is skipped silently.

    known_kinds.py IN OUT
"""
import sys

import yaml

# API groups of custom resources the chart may render, not in Kubernetes'
# own OpenAPI schemas: checked by the invariants instead.
CRD_GROUPS = {"gateway.networking.k8s.io", "monitoring.coreos.com"}


def main():
    src, out = sys.argv[1], sys.argv[2]
    with open(src) as f:
        docs = [d for d in yaml.safe_load_all(f) if isinstance(d, dict)]
    kept, skipped = [], []
    for d in docs:
        group = d.get("apiVersion", "").split("/")[0] if "/" in d.get("apiVersion", "") else ""
        (skipped if group in CRD_GROUPS else kept).append(d)
    with open(out, "w") as f:
        yaml.safe_dump_all(kept, f, sort_keys=False)
    for d in skipped:
        print(f"SKIP kubernetes-validate: {d['kind']}/{d['metadata']['name']} ({d['apiVersion']}), a CRD kind it has no schema for")
    print(f"kubernetes-validate: {len(kept)} objects of built-in kinds, {len(skipped)} CRD objects skipped")


if __name__ == "__main__":
    main()
