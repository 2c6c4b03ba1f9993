#!/usr/bin/env python3
"""Writes deploy/helm/vigil/values.schema.json (draft-07): python3 vigil.py OUT.
Config keys passed through to Vigil (auth, inspections, overrides,
integrations, slo) list exactly the keys of the Rust config structs, so a
key Vigil would refuse at start is refused by helm already."""
from builders import A, B, DUR, I, MAP, N, O, QTY, S, resources, write
RES = resources(description="requests and limits are both required")
SCHED = {"nodeSelector": O(None, {"type": "string"}), "tolerations": A(MAP), "affinity": MAP, "podAnnotations": O(None, {"type": "string"})}
PERSIST = O({"size": S(), "storageClassName": S(), "accessModes": A(S(), minItems=1)}, req=["size"])
PEERS = A(MAP, description="NetworkPolicy peers (podSelector, namespaceSelector, ipBlock)")
SECRETREF = O({"name": S(minLength=1), "key": S(minLength=1)}, req=["name", "key"])
HPA = O({"enabled": B(), "minReplicas": I(minimum=1), "maxReplicas": I(minimum=1), "targetCPUUtilizationPercentage": I(minimum=1, maximum=100)})
PDB = O({"maxUnavailable": {"anyOf": [I(minimum=0), S()]}})
SVC = O({"type": S(enum=["ClusterIP", "NodePort", "LoadBalancer"])})
SEVERITY = S(enum=["info", "warning", "critical"])
INTEGRATION = O({
    "name": S(pattern=r"^[A-Za-z0-9._-]+$"),
    "slack": O({}), "teams": O({}),
    "pagerduty": O({"url": S()}),
    "opsgenie": O({"url": S()}),
    "email": O({"host": S(), "port": I(), "security": S(enum=["starttls", "tls", "none"]), "username": S(), "from": S(), "to": A(S(), minItems=1)}, req=["host", "from", "to"]),
    "webhook": O({"headers": O(None, {"type": "string"}), "content_type": S(), "template": S(), "trigger_template": S(), "resolve_template": S(), "deployment_template": S()}),
    "categories": A(S()), "min_severity": SEVERITY, "deployments": B(),
    "rate_per_minute": I(minimum=1), "timeout": DUR,
    "secretRef": SECRETREF,
}, req=["name"], description="an integration of docs/notifications.md without its secret; secretRef names the Secret holding it")
INSPECTION = O({"enabled": B(), "threshold": N(minimum=0), "critical": N(minimum=0), "for": DUR, "keep_firing_for": DUR})
OVERRIDE = O({"project": S(), "application": S(), "node": S(), "inspection": S(minLength=1), "enabled": B(), "threshold": N(minimum=0), "critical": N(minimum=0), "for": DUR, "keep_firing_for": DUR}, req=["inspection"])
PCT = N(exclusiveMinimum=0, exclusiveMaximum=100)
SLO = O({"availability_percent": PCT, "latency_percent": PCT, "latency_threshold": DUR,
         "overrides": A(O({"application": S(minLength=1), "availability_percent": PCT, "latency_percent": PCT, "latency_threshold": DUR}, req=["application"]))})
ROLE = S(enum=["viewer", "editor", "admin"])
AUTH = O({
    "mode": S(enum=["token", "oidc", "forward_auth", "anonymous"]),
    "session_ttl": DUR, "secure_cookies": B(), "anonymous_role": ROLE,
    "oidc": O({"issuer": S(pattern="^https?://"), "client_id": S(), "scopes": A(S()), "groups_claim": S(), "refresh_metadata_every": DUR}),
    "forward_auth": O({"trusted_proxies": A(S()), "user_header": S(), "email_header": S(), "groups_header": S()}),
    "roles": A(O({"project": S(minLength=1), "role": ROLE, "users": A(S()), "groups": A(S()), "everyone": B()}, req=["project", "role"])),
}, description="[ui_gateway.auth] of docs/ui.md; secrets and public_url are set by the chart")
IMAGE = O({"repository": S(minLength=1), "tag": S(), "pullPolicy": S(enum=["Always", "IfNotPresent", "Never"])}, req=["repository"])

def svc(extra):
    p = {"enabled": B(), "resources": RES}
    p.update(SCHED); p.update(extra)
    return O(p, req=["resources"])

schema = {
 "$schema": "http://json-schema.org/draft-07/schema#",
 "title": "Values of the vigil Helm chart",
 "type": "object",
 "additionalProperties": False,
 "properties": {
  "global": O({
    "mode": S(enum=["monolith", "distributed"]),
    "cluster": S(),
    "image": IMAGE,
    "imagePullSecrets": A(MAP),
    "log": O({"level": S(minLength=1), "format": S(enum=["plain", "json"])}),
    "projects": A(O({"name": S(pattern="^[a-z0-9][a-z0-9-]{0,62}$")}, req=["name"]), minItems=1),
    "apiKeys": O({"existingSecret": S(), "clientKey": S()}),
    "publicUrl": S(pattern="^https?://"),
    "storage": O({"retention": O({"metrics": DUR, "traces": DUR, "logs": DUR, "profiles": DUR})}),
    "clickhouse": O({"bundled": B(), "url": {"anyOf": [S(pattern="^https?://"), S(maxLength=0)]}, "database": S(minLength=1), "cluster": S(), "existingSecret": S(), "userKey": S(), "passwordKey": S()}),
    "networkPolicy": O({"enabled": B(), "metricsFrom": PEERS}),
    "serviceMonitor": O({"enabled": B(), "interval": S(), "labels": O(None, {"type": "string"})}),
  }, req=["mode", "image", "projects", "publicUrl"]),
  "monolith": O(dict(persistence=PERSIST, resources=RES, **SCHED), req=["resources", "persistence"]),
  "agent": svc({"hostNetwork": B(), "config": MAP, "spoolHostPath": S(pattern="^/"),
                "priorityClass": O({"create": B(), "name": S(description="empty: <release>-agent; required with create: false (the templates fail without it)"), "value": I()})}),
  "cluster-agent": svc({
      "interval": dict(DUR, description="cluster_agent.interval: how often the figures are shipped (at least 1s)"),
      "namespaces": A(S(pattern="^[a-z0-9-]{1,63}$"), description="cluster_agent.namespaces: the namespaces watched; empty: all of them"),
      "flux": O({"enabled": B(description="cluster_agent.flux, and Flux Kustomizations and HelmReleases in the ClusterRole")}),
      "watch_timeout": dict(DUR, description="cluster_agent.watch_timeout: how long one watch request lasts before it is resumed (1s to 1h)"),
      "config": O({"push_timeout": DUR, "max_spool_bytes": I(minimum=1048576), "max_pending_events": I(minimum=1)},
                  description="extra keys of [cluster_agent]; the chart sets the others"),
  }),
  "ingest": svc({"config": MAP, "replicas": I(minimum=1), "autoscaling": HPA, "pdb": PDB, "service": SVC, "networkPolicy": O({"from": PEERS})}),
  "query": svc({"slo": SLO, "config": MAP, "replicas": I(minimum=1), "autoscaling": HPA, "pdb": PDB, "service": SVC, "networkPolicy": O({"httpFrom": PEERS})}),
  "alerting": svc({"interval": DUR, "retention": DUR, "inspections": O(None, INSPECTION), "overrides": A(OVERRIDE),
                   "integrations": A(INTEGRATION), "config": MAP, "replicas": I(minimum=1),
                   "lease": O({"duration": DUR, "renew_every": DUR}), "persistence": PERSIST, "networkPolicy": O({})}),
  "ui-gateway": svc({"replicas": I(minimum=1), "auth": AUTH,
                     "oidcClientSecret": O({"name": S(), "key": S(minLength=1)}),
                     "config": MAP, "service": SVC,
                     "ingress": O({"enabled": B(), "className": S(), "annotations": O(None, {"type": "string"}), "host": S(), "tls": O({"secretName": S()})}),
                     "httpRoute": O({"enabled": B(), "parentRefs": A(MAP), "hostnames": A(S()), "annotations": O(None, {"type": "string"})}),
                     "networkPolicy": O({"from": PEERS})}),
  "clickhouse": O(dict(image=IMAGE, persistence=PERSIST, resources=RES, **SCHED), req=["resources"]),
  "heartbeat": O({"enabled": B(), "everyMinutes": I(minimum=1, maximum=59), "pingUrlSecret": O({"name": S(), "key": S(minLength=1)}), "resources": RES}, req=["resources"]),
 },
}
# Helm copies `global` into every subchart's section before validating.
for k in ["agent", "cluster-agent", "ingest", "query", "alerting", "ui-gateway", "clickhouse"]:
    schema["properties"][k]["properties"]["global"] = {"type": "object", "description": "set by Helm: a copy of global"}
write(schema)
