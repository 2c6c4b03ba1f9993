#!/usr/bin/env python3
"""Writes deploy/helm/vigil-heartbeat/values.schema.json (draft-07):
python3 vigil_heartbeat.py OUT. Checks and probes list exactly the keys of
services/heartbeat (CheckConfig, ProbeConfig)."""
from builders import A, B, DUR, I, MAP, N, O, QTY, S, resources, write
RES = resources()
SECRETREF = O({"name": S(minLength=1), "key": S(minLength=1)}, req=["name", "key"])
INTEGRATION = O({
    "name": S(pattern=r"^[A-Za-z0-9._-]+$"),
    "slack": O({}), "teams": O({}), "pagerduty": O({"url": S()}), "opsgenie": O({"url": S()}),
    "email": O({"host": S(), "port": I(), "security": S(enum=["starttls", "tls", "none"]), "username": S(), "from": S(), "to": A(S(), minItems=1)}, req=["host", "from", "to"]),
    "webhook": O({"headers": O(None, {"type": "string"}), "content_type": S(), "template": S(), "trigger_template": S(), "resolve_template": S(), "deployment_template": S()}),
    "categories": A(S()), "min_severity": S(enum=["info", "warning", "critical"]), "deployments": B(),
    "rate_per_minute": I(minimum=1), "timeout": DUR, "secretRef": SECRETREF,
}, req=["name"])
CHECK = O({"name": S(minLength=1, maxLength=100), "slug": S(pattern="^[a-z0-9_-]*$"), "uuid": S(pattern="^[0-9a-fA-F-]{32,36}$"),
           "period": DUR, "schedule": S(), "tz": S(), "grace": DUR, "tags": S(), "desc": S(),
           "manual_resume": B(), "methods": S(enum=["", "POST"])}, req=["name", "uuid"])
PROBE = O({"name": S(minLength=1), "slug": S(), "tags": S(),
           "http": O({"url": S(pattern="^https?://"), "status": I(), "keyword": S(), "keyword_absent": S(), "max_latency": DUR, "ca_file": S()}, req=["url"]),
           "tcp": O({"address": S(minLength=1)}, req=["address"]),
           "tls": O({"address": S(minLength=1), "server_name": S(), "min_days": I(minimum=0), "ca_file": S()}, req=["address"]),
           "dns": O({"name": S(minLength=1), "record": S(enum=["A", "AAAA", "CNAME", "MX", "NS", "TXT"]), "expect": S(), "server": S()}, req=["name"]),
           "interval": DUR, "timeout": DUR, "retries": I(minimum=0), "retry_delay": DUR}, req=["name"])
schema = {
 "$schema": "http://json-schema.org/draft-07/schema#",
 "title": "Values of the vigil-heartbeat Helm chart",
 "type": "object", "additionalProperties": False,
 "required": ["image", "resources", "persistence"],
 "properties": {
  "image": O({"repository": S(minLength=1), "tag": S(), "pullPolicy": S(enum=["Always", "IfNotPresent", "Never"])}, req=["repository"]),
  "imagePullSecrets": A(MAP),
  "log": O({"level": S(minLength=1), "format": S(enum=["plain", "json"])}),
  "keys": O({"existingSecret": S()}),
  "publicUrl": {"anyOf": [S(pattern="^https?://"), S(maxLength=0)]},
  "project": S(pattern="^[a-z0-9][a-z0-9-]{0,62}$"),
  "uiUrl": S(),
  "checks": A(CHECK), "probes": A(PROBE), "integrations": A(INTEGRATION),
  "gatewayKeysSecret": O({"name": S(), "key": S(minLength=1)}),
  "config": MAP,
  "persistence": O({"size": S(), "storageClassName": S(), "accessModes": A(S(), minItems=1)}, req=["size"]),
  "service": O({"type": S(enum=["ClusterIP", "NodePort", "LoadBalancer"])}),
  "ingress": O({"enabled": B(), "className": S(), "annotations": O(None, {"type": "string"}), "host": S(), "tls": O({"secretName": S()})}),
  "networkPolicy": O({"enabled": B(), "grpcFrom": A(MAP)}),
  "resources": RES,
  "nodeSelector": O(None, {"type": "string"}), "tolerations": A(MAP), "affinity": MAP, "podAnnotations": O(None, {"type": "string"}),
 },
}
write(schema)
