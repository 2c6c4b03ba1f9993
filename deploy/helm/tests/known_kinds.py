#!/usr/bin/env python3
"""Splits rendered manifests in two: the objects of built-in Kubernetes
kinds go to KNOWN (YAML) for kubernetes-validate, the objects of CRD kinds
it has no schema for (Gateway API HTTPRoute, the Prometheus Operator's
ServiceMonitor) to CRDS (a JSON array) for crd_validate.mjs, which checks
them against those projects' schemas. Nothing is skipped.

    known_kinds.py IN KNOWN CRDS
"""
import json
import sys

import yaml

# API groups of custom resources the chart may render, not in Kubernetes'
# own OpenAPI schemas: validated by crd_validate.mjs instead.
CRD_GROUPS = {"gateway.networking.k8s.io", "monitoring.coreos.com"}


def main():
    src, known_out, crds_out = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(src) as f:
        docs = [d for d in yaml.safe_load_all(f) if isinstance(d, dict)]
    kept, crds = [], []
    for d in docs:
        group = d.get("apiVersion", "").split("/")[0] if "/" in d.get("apiVersion", "") else ""
        (crds if group in CRD_GROUPS else kept).append(d)
    with open(known_out, "w") as f:
        yaml.safe_dump_all(kept, f, sort_keys=False)
    with open(crds_out, "w") as f:
        # default=str: a YAML timestamp stays a string, as the API server reads it.
        json.dump(crds, f, default=str)
    print(f"kubernetes-validate: {len(kept)} objects of built-in kinds; CRD schemas: {len(crds)} objects")


if __name__ == "__main__":
    main()
