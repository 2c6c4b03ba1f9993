#!/usr/bin/env python3
"""Invariants of the rendered Vigil Helm charts (deploy/helm/vigil and
deploy/helm/vigil-heartbeat), checked on `helm template` output.

    invariants.py --manifest rendered.yaml --values ci/x-values.yaml [--chart vigil|vigil-heartbeat]

Each failure is printed as `FAIL <where>: <what>`; the exit status is 1 when
any failed. What is checked (and what is exempt, printed as NOTE):
- every container (init containers and CronJob containers included) has
  resources.requests and resources.limits for cpu and memory;
- every container of a long-running workload has an httpGet liveness and
  readiness probe; exempt: CronJob/Job containers (they run to completion,
  nothing serves) and init containers (Kubernetes refuses probes on them);
- every container but the node agent's runs non-root, with a read-only
  root file system, no privilege escalation, not privileged;
- pods that mount a ConfigMap carry a checksum/config annotation;
- the agent DaemonSet: privileged, hostPID, a priorityClassName, tolerates
  every taint, node name from spec.nodeName, and mounts tracefs, bpffs,
  debugfs, /sys/kernel/btf (read-only), the host's /proc and /sys, /var/log,
  /var/log/pods and /var/lib/docker/containers (read-only) and its spool;
- the cluster agent: one replica, its [cluster_agent] with the key from a
  mounted file, global.cluster and interval, namespaces, flux and
  watch_timeout as the values say, no api_url;
- RBAC: the cluster agent's ClusterRole only lists and watches the expected
  resources (no secrets, no wildcard, no write or escalate/bind/impersonate
  verb); any Role only touches leases with get/create/update;
- Secrets: no data value comes from the values files; generated ones carry
  helm.sh/resource-policy: keep;
- ConfigMaps: no value holds a rendered secret, no config key that names a
  secret (password, secret, token, api_key, …) is set except as `*_file`,
  no XML <password> with a literal; env vars that look secret come from
  secretKeyRef, never a literal;
- every service's http listen is 0.0.0.0:<port> and its probes use that port;
- mode-specific: monolith (StatefulSet with a PVC running `vigil up --only
  ingest,query,alerting,ui-gateway --config <the mounted ConfigMap file>` on
  redb, the agents' project first in its projects, no ClickHouse, no split
  Deployments); distributed on the bundled ClickHouse (its StatefulSet, PVC,
  /ping probes, storage.clickhouse.url pointing at it) or an external one
  (no ClickHouse workload, the URL from values, credentials from the
  Secret); HPAs and PDBs for ingest and query; the alerting Lease RBAC;
- SSO: mode oidc renders oidc.client_secret_file, mounted from the named
  Secret, and no inline client secret;
- ServiceMonitors and NetworkPolicies when enabled.
"""

import argparse
import base64
import re
import sys

import yaml

WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod"}
SECRET_KEY = re.compile(r"(password|secret|token|api_key|routing_key|webhook_url|ping_key|gateway_key)", re.I)
SECRET_ENV = re.compile(r"(PASSWORD|SECRET|TOKEN|API_KEY|PING_URL|CREDENTIAL)")
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "escalate", "bind", "impersonate", "*"}


class Checker:
    def __init__(self, docs, values, chart):
        self.docs = docs
        self.values = values
        self.chart = chart
        self.failures = []
        self.notes = []

    def fail(self, where, what):
        self.failures.append(f"FAIL {where}: {what}")

    def note(self, what):
        self.notes.append(f"NOTE {what}")

    # -- helpers --------------------------------------------------------
    def of_kind(self, *kinds):
        return [d for d in self.docs if d.get("kind") in kinds]

    @staticmethod
    def name(doc):
        return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"

    @staticmethod
    def pod_spec(doc):
        kind = doc["kind"]
        if kind == "Pod":
            return doc.get("spec", {}), doc.get("metadata", {})
        if kind == "CronJob":
            tpl = doc["spec"]["jobTemplate"]["spec"]["template"]
        else:
            tpl = doc["spec"]["template"]
        return tpl.get("spec", {}), tpl.get("metadata", {})

    def component(self, doc):
        return doc.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/component", "")

    def config_of(self, doc):
        """The vigil.yaml of the ConfigMap a workload mounts, parsed."""
        spec, _ = self.pod_spec(doc)
        for vol in spec.get("volumes", []) or []:
            cm = (vol.get("configMap") or {}).get("name")
            if not cm:
                continue
            for c in self.of_kind("ConfigMap"):
                if c["metadata"]["name"] == cm and "vigil.yaml" in c.get("data", {}):
                    return yaml.safe_load(c["data"]["vigil.yaml"]) or {}
        return None

    def value(self, *path, default=None):
        cur = self.values
        for p in path:
            if not isinstance(cur, dict) or p not in cur:
                return default
            cur = cur[p]
        return cur

    def secret_values(self):
        out = set()
        for s in self.of_kind("Secret"):
            for k, v in (s.get("data") or {}).items():
                try:
                    out.add(base64.b64decode(v).decode().strip())
                except Exception:
                    pass
            for k, v in (s.get("stringData") or {}).items():
                out.add(str(v).strip())
        return {v for v in out if len(v) >= 8}

    def values_strings(self):
        out = set()

        def walk(v):
            if isinstance(v, dict):
                for x in v.values():
                    walk(x)
            elif isinstance(v, list):
                for x in v:
                    walk(x)
            elif isinstance(v, str) and len(v) >= 8:
                out.add(v.strip())

        walk(self.values)
        return out

    # -- checks ---------------------------------------------------------
    def containers(self):
        """(workload, container, is_init) for every container."""
        for doc in self.of_kind(*WORKLOADS):
            spec, _ = self.pod_spec(doc)
            for c in spec.get("initContainers", []) or []:
                yield doc, c, True
            for c in spec.get("containers", []) or []:
                yield doc, c, False

    def check_resources_and_probes(self):
        exempt_jobs = exempt_init = 0
        for doc, c, init in self.containers():
            where = f"{self.name(doc)} container {c.get('name')}"
            res = c.get("resources") or {}
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if not (res.get(part) or {}).get(r):
                        self.fail(where, f"resources.{part}.{r} is not set")
            if doc["kind"] in ("CronJob", "Job"):
                exempt_jobs += 1
                continue
            if init:
                exempt_init += 1
                for p in ("livenessProbe", "readinessProbe", "startupProbe"):
                    if p in c:
                        self.fail(where, f"{p} on an init container (Kubernetes refuses it)")
                continue
            for p in ("livenessProbe", "readinessProbe"):
                probe = c.get(p)
                if not probe:
                    self.fail(where, f"no {p}")
                elif "httpGet" not in probe:
                    self.fail(where, f"{p} is not an httpGet probe")
        if exempt_jobs:
            self.note(f"{exempt_jobs} CronJob/Job container(s) exempt from probes (run to completion)")
        if exempt_init:
            self.note(f"{exempt_init} init container(s) exempt from probes (Kubernetes refuses probes on init containers); resources checked")

    def is_agent(self, doc):
        return doc["kind"] == "DaemonSet" and self.component(doc) == "agent"

    def check_security(self):
        for doc, c, init in self.containers():
            if self.is_agent(doc):
                continue
            spec, _ = self.pod_spec(doc)
            psc = spec.get("securityContext") or {}
            sc = c.get("securityContext") or {}
            where = f"{self.name(doc)} container {c.get('name')}"
            if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
                self.fail(where, "not runAsNonRoot")
            if sc.get("runAsUser", psc.get("runAsUser")) in (0, None):
                self.fail(where, "runAsUser is root or unset")
            if sc.get("readOnlyRootFilesystem") is not True:
                self.fail(where, "readOnlyRootFilesystem is not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                self.fail(where, "allowPrivilegeEscalation is not false")
            if sc.get("privileged"):
                self.fail(where, "privileged outside the node agent")
            if spec.get("hostPID") or spec.get("hostNetwork") or spec.get("hostIPC"):
                self.fail(where, "host namespaces outside the node agent")

    def check_checksums(self):
        for doc in self.of_kind("Deployment", "StatefulSet", "DaemonSet"):
            spec, meta = self.pod_spec(doc)
            mounts_cm = any((v.get("configMap") or {}).get("name") for v in spec.get("volumes", []) or [])
            if mounts_cm and not (meta.get("annotations") or {}).get("checksum/config"):
                self.fail(self.name(doc), "mounts a ConfigMap but has no checksum/config annotation (pods would not roll on config changes)")

    def check_agent(self):
        agents = [d for d in self.of_kind("DaemonSet") if self.is_agent(d)]
        if self.chart != "vigil":
            return
        if self.value("agent", "enabled", default=True) is False:
            return
        if len(agents) != 1:
            self.fail("DaemonSet agent", f"expected one agent DaemonSet, found {len(agents)}")
            return
        ds = agents[0]
        where = self.name(ds)
        spec, _ = self.pod_spec(ds)
        if spec.get("hostPID") is not True:
            self.fail(where, "hostPID is not true")
        if not spec.get("priorityClassName"):
            self.fail(where, "no priorityClassName")
        if not any(t.get("operator") == "Exists" and not t.get("key") for t in spec.get("tolerations") or []):
            self.fail(where, "does not tolerate every taint (operator: Exists)")
        c = spec["containers"][0]
        if not (c.get("securityContext") or {}).get("privileged"):
            self.fail(where, "the agent container is not privileged")
        env = {e["name"]: e for e in c.get("env", []) or []}
        node = env.get("VIGIL_AGENT__NODE", {})
        if (node.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath") != "spec.nodeName":
            self.fail(where, "VIGIL_AGENT__NODE does not come from spec.nodeName")
        host_paths = {v["name"]: v["hostPath"]["path"] for v in spec.get("volumes", []) if "hostPath" in v}
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", []) or []}
        wanted = {
            "/sys/kernel/tracing": ("/sys/kernel/tracing", False),
            "/sys/fs/bpf": ("/sys/fs/bpf", False),
            "/sys/kernel/debug": ("/sys/kernel/debug", False),
            "/sys/kernel/btf": ("/sys/kernel/btf", True),
            "/host/proc": ("/proc", True),
            "/host/sys": ("/sys", True),
            "/var/log": ("/var/log", True),
            "/var/log/pods": ("/var/log/pods", True),
            "/var/lib/docker/containers": ("/var/lib/docker/containers", True),
        }
        for path, (host, ro) in wanted.items():
            m = mounts.get(path)
            if not m:
                self.fail(where, f"does not mount {path}")
                continue
            if host_paths.get(m["name"]) != host:
                self.fail(where, f"{path} is not the host's {host} (hostPath {host_paths.get(m['name'])})")
            if ro and not m.get("readOnly"):
                self.fail(where, f"{path} is not mounted read-only")
        cfg = (self.config_of(ds) or {}).get("agent", {})
        for key, want in (("proc_root", "/host/proc"), ("sys_root", "/host/sys")):
            if cfg.get(key) != want:
                self.fail(where, f"agent.{key} is {cfg.get(key)!r}, not {want}")
        spool = cfg.get("spool_dir")
        m = mounts.get(spool or "")
        if not spool or not m or m["name"] not in host_paths:
            self.fail(where, f"agent.spool_dir {spool!r} is not a hostPath mount")
        if not str(cfg.get("api_key_file", "")).startswith("/etc/vigil/"):
            self.fail(where, "agent.api_key_file is not a mounted Secret file")
        if self.value("global", "cluster") and cfg.get("cluster") != self.value("global", "cluster"):
            self.fail(where, "agent.cluster is not global.cluster")

    def check_cluster_agent(self):
        if self.chart != "vigil" or self.value("cluster-agent", "enabled", default=True) is False:
            return
        deps = self.workload("Deployment", "cluster-agent")
        if len(deps) != 1:
            self.fail("Deployment cluster-agent", f"expected one, found {len(deps)}")
            return
        d = deps[0]
        if d["spec"].get("replicas") != 1:
            self.fail(self.name(d), "more than one replica would ship everything twice")
        cfg = (self.config_of(d) or {}).get("cluster_agent")
        if cfg is None:
            self.fail(self.name(d), "its ConfigMap has no [cluster_agent]")
            return
        if not str(cfg.get("api_key_file", "")).startswith("/etc/vigil/"):
            self.fail(self.name(d), "cluster_agent.api_key_file is not a mounted Secret file")
        if self.value("global", "cluster") and cfg.get("cluster") != self.value("global", "cluster"):
            self.fail(self.name(d), "cluster_agent.cluster is not global.cluster")
        for key, path in (("interval", ("interval",)), ("namespaces", ("namespaces",)),
                          ("flux", ("flux", "enabled")), ("watch_timeout", ("watch_timeout",))):
            want = self.value("cluster-agent", *path)
            if want is not None and cfg.get(key) != want:
                self.fail(self.name(d), f"cluster_agent.{key} is {cfg.get(key)!r}, values say {want!r}")
        if "api_url" in cfg:
            self.fail(self.name(d), "cluster_agent.api_url is set: the in-cluster service account is meant")

    def check_rbac(self):
        for role in self.of_kind("ClusterRole", "Role"):
            where = self.name(role)
            for rule in role.get("rules", []) or []:
                groups, resources, verbs = rule.get("apiGroups", []), rule.get("resources", []), rule.get("verbs", [])
                if "*" in groups or "*" in resources or "*" in verbs:
                    self.fail(where, f"wildcard in rule {rule}")
                if "secrets" in resources:
                    self.fail(where, "grants access to secrets")
                if role["kind"] == "ClusterRole":
                    bad = set(verbs) - {"list", "watch"}
                    if bad:
                        self.fail(where, f"verbs {sorted(bad)} beyond list and watch")
                    if rule.get("nonResourceURLs"):
                        self.fail(where, "nonResourceURLs")
                else:
                    if resources != ["leases"] or groups != ["coordination.k8s.io"]:
                        self.fail(where, f"a Role beyond coordination.k8s.io leases: {rule}")
                    bad = set(verbs) - {"get", "create", "update"}
                    if bad:
                        self.fail(where, f"Lease verbs {sorted(bad)} beyond get, create, update")
        if self.chart != "vigil" or self.value("cluster-agent", "enabled", default=True) is False:
            return
        roles = [r for r in self.of_kind("ClusterRole") if self.component(r) == "cluster-agent"]
        if len(roles) != 1:
            self.fail("ClusterRole cluster-agent", f"expected one, found {len(roles)}")
            return
        granted = {(g, r) for rule in roles[0]["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
        wanted = {("", "pods"), ("", "nodes"), ("", "services"), ("", "events"),
                  ("apps", "deployments"), ("apps", "replicasets"), ("apps", "statefulsets"), ("apps", "daemonsets"),
                  ("batch", "jobs"), ("batch", "cronjobs"), ("discovery.k8s.io", "endpointslices")}
        flux = {("kustomize.toolkit.fluxcd.io", "kustomizations"), ("helm.toolkit.fluxcd.io", "helmreleases")}
        if self.value("cluster-agent", "flux", "enabled", default=True):
            wanted |= flux
        elif granted & flux:
            self.fail(self.name(roles[0]), "Flux resources granted with flux.enabled false")
        for g, r in sorted(wanted - granted):
            self.fail(self.name(roles[0]), f"does not grant list/watch on {g or 'core'}/{r}")
        for g, r in sorted(granted - wanted):
            self.fail(self.name(roles[0]), f"grants {g or 'core'}/{r}, which the cluster agent does not read")
        bindings = [b for b in self.of_kind("ClusterRoleBinding") if b["roleRef"]["name"] == roles[0]["metadata"]["name"]]
        if not bindings:
            self.fail(self.name(roles[0]), "not bound to a ServiceAccount")

    def check_secrets(self):
        from_values = self.values_strings()
        for s in self.of_kind("Secret"):
            where = self.name(s)
            for k, v in (s.get("data") or {}).items():
                decoded = base64.b64decode(v).decode(errors="replace").strip()
                if decoded in from_values:
                    self.fail(where, f"data key {k} holds a value written in the values file")
            if s.get("stringData"):
                self.fail(where, "stringData: secret values written in the template")
            if (s["metadata"].get("annotations") or {}).get("helm.sh/resource-policy") != "keep":
                self.fail(where, "a generated Secret without helm.sh/resource-policy: keep (keys would change on reinstall)")

    def check_no_secrets_in_configmaps(self):
        secrets = self.secret_values()
        for cm in self.of_kind("ConfigMap"):
            where = self.name(cm)
            for fname, text in (cm.get("data") or {}).items():
                for s in secrets:
                    if s in text:
                        self.fail(f"{where} {fname}", "holds the value of a Secret")
                if fname.endswith(".xml"):
                    for m in re.finditer(r"<password>([^<]+)</password>", text):
                        self.fail(f"{where} {fname}", "an XML <password> with a literal value")
                    continue
                try:
                    parsed = yaml.safe_load(text)
                except yaml.YAMLError as e:
                    self.fail(f"{where} {fname}", f"not YAML: {e}")
                    continue
                self._walk_keys(parsed, f"{where} {fname}", "")
        for doc, c, _ in self.containers():
            for e in c.get("env", []) or []:
                if SECRET_ENV.search(e["name"]) and "value" in e:
                    self.fail(f"{self.name(doc)} container {c.get('name')}", f"env {e['name']} is a literal, not a secretKeyRef")
                if "value" in e and str(e["value"]).strip() in secrets:
                    self.fail(f"{self.name(doc)} container {c.get('name')}", f"env {e['name']} holds a secret's value")

    def _walk_keys(self, v, where, path):
        if isinstance(v, dict):
            for k, x in v.items():
                p = f"{path}.{k}" if path else str(k)
                if SECRET_KEY.search(str(k)) and not str(k).endswith("_file") and x not in (None, "", [], {}):
                    self.fail(where, f"config key {p} names a secret but is not a *_file path")
                if str(k).endswith("_file") and x is not None and not str(x).startswith("/etc/vigil/"):
                    self.fail(where, f"{p} = {x!r} is not a mounted file under /etc/vigil")
                if str(k) == "headers" and isinstance(x, dict):
                    for h in x:
                        if re.search(r"(?i)(authorization|token|secret|key|cookie|password|auth)", h):
                            self.fail(where, f"{p}.{h}: a credential header written into the ConfigMap")
                self._walk_keys(x, where, p)
        elif isinstance(v, list):
            for i, x in enumerate(v):
                self._walk_keys(x, where, f"{path}[{i}]")

    def check_listen_and_probes(self):
        for doc in self.of_kind("Deployment", "StatefulSet", "DaemonSet"):
            cfg = self.config_of(doc)
            if cfg is None:
                continue
            spec, _ = self.pod_spec(doc)
            ports = {}
            for c in spec.get("containers", []):
                for p in c.get("ports", []) or []:
                    ports[p.get("name")] = p["containerPort"]
            http_ports = set()
            for section, body in cfg.items():
                if not isinstance(body, dict):
                    continue
                for server in ("http", "grpc"):
                    listen = (body.get(server) or {}).get("listen")
                    if listen is None:
                        continue
                    if not str(listen).startswith("0.0.0.0:"):
                        self.fail(self.name(doc), f"{section}.{server}.listen is {listen!r}, not 0.0.0.0:<port>")
                    if server == "http":
                        http_ports.add(int(str(listen).rsplit(":", 1)[1]))
            for c in spec.get("containers", []):
                for p in ("livenessProbe", "readinessProbe"):
                    port = ((c.get(p) or {}).get("httpGet") or {}).get("port")
                    port = ports.get(port, port)
                    if http_ports and port not in http_ports:
                        self.fail(self.name(doc), f"{p} on port {port}, which is no http listen of the config ({sorted(http_ports)})")
                path = (((c.get("livenessProbe") or {}).get("httpGet")) or {}).get("path")
                if http_ports and path != "/healthz":
                    self.fail(self.name(doc), f"livenessProbe path {path!r}, not /healthz")
                path = (((c.get("readinessProbe") or {}).get("httpGet")) or {}).get("path")
                if http_ports and path != "/readyz":
                    self.fail(self.name(doc), f"readinessProbe path {path!r}, not /readyz")

    def workload(self, kind, component):
        return [d for d in self.of_kind(kind) if self.component(d) == component]

    def check_mode(self):
        if self.chart != "vigil":
            return
        mode = self.value("global", "mode", default="monolith")
        configs = [c for c in (self.config_of(d) for d in self.of_kind("Deployment", "StatefulSet", "DaemonSet")) if c]
        ch_workloads = [d for d in self.of_kind("StatefulSet", "Deployment")
                        if any("clickhouse" in c.get("image", "") for c in self.pod_spec(d)[0].get("containers", []))]
        if mode == "monolith":
            sts = self.workload("StatefulSet", "monolith")
            if len(sts) != 1:
                self.fail("mode monolith", f"expected one monolith StatefulSet, found {len(sts)}")
            else:
                s = sts[0]
                if not s["spec"].get("volumeClaimTemplates"):
                    self.fail(self.name(s), "no PVC (volumeClaimTemplates) for the redb store")
                if s["spec"].get("replicas") != 1:
                    self.fail(self.name(s), "the redb store needs exactly one replica")
                cmd = self.pod_spec(s)[0]["containers"][0]["command"]
                if cmd[:2] != ["vigil", "up"] or "--only" not in cmd or cmd[cmd.index("--only") + 1] != "ingest,query,alerting,ui-gateway":
                    self.fail(self.name(s), f"does not run `vigil up --only ingest,query,alerting,ui-gateway`: {cmd}")
                cfg = self.config_of(s) or {}
                if (cfg.get("storage") or {}).get("backend") != "redb":
                    self.fail(self.name(s), "storage.backend is not redb")
                spec = self.pod_spec(s)[0]
                c = spec["containers"][0]
                mounts = [m["mountPath"] for m in c["volumeMounts"]]
                if cfg.get("data_dir") not in mounts:
                    self.fail(self.name(s), "data_dir is not the PVC's mount")
                # `vigil up` reads the ConfigMap's file as mounted (no copy
                # made by an init container).
                cm_volumes = {v["name"] for v in spec.get("volumes", []) or [] if v.get("configMap")}
                cm_files = {m["mountPath"] for m in c["volumeMounts"]
                            if m["name"] in cm_volumes and m.get("subPath") == "vigil.yaml"}
                path = cmd[cmd.index("--config") + 1] if "--config" in cmd[:-1] else None
                if path not in cm_files:
                    self.fail(self.name(s), f"vigil up --config {path} is not the ConfigMap's vigil.yaml as mounted ({sorted(cm_files)})")
                # `vigil up` runs alerting for the first project with a key:
                # it must be the agents' project, global.projects[0].
                want = (self.value("global", "projects", default=[{"name": "default"}]) or [{}])[0].get("name")
                got = [p.get("name") for p in cfg.get("projects") or []]
                if cfg and (not got or got[0] != want):
                    self.fail(self.name(s), f"projects start with {got[:1]}, not the agents' project {want!r} (vigil up would inspect another project)")
            if ch_workloads:
                self.fail("mode monolith", "a ClickHouse workload is rendered")
            for c in configs:
                if (c.get("storage") or {}).get("backend") == "clickhouse":
                    self.fail("mode monolith", "a config uses storage.backend clickhouse")
            for comp in ("ingest", "query", "ui-gateway"):
                if self.workload("Deployment", comp):
                    self.fail("mode monolith", f"a {comp} Deployment is rendered")
            if self.workload("StatefulSet", "alerting"):
                self.fail("mode monolith", "an alerting StatefulSet is rendered")
            return
        # distributed
        if self.workload("StatefulSet", "monolith"):
            self.fail("mode distributed", "the monolith StatefulSet is rendered")
        for comp in ("ingest", "query", "ui-gateway"):
            if len(self.workload("Deployment", comp)) != 1:
                self.fail("mode distributed", f"no {comp} Deployment")
        for comp in ("ingest", "query"):
            if self.value(comp, "autoscaling", "enabled", default=True):
                hpas = [h for h in self.of_kind("HorizontalPodAutoscaler") if self.component(h) == comp]
                if len(hpas) != 1 or hpas[0]["apiVersion"] != "autoscaling/v2":
                    self.fail("mode distributed", f"no autoscaling/v2 HPA for {comp}")
            pdbs = [p for p in self.of_kind("PodDisruptionBudget") if self.component(p) == comp]
            if len(pdbs) != 1 or pdbs[0]["apiVersion"] != "policy/v1":
                self.fail("mode distributed", f"no policy/v1 PodDisruptionBudget for {comp}")
        alerting = self.workload("StatefulSet", "alerting")
        if len(alerting) != 1:
            self.fail("mode distributed", "no alerting StatefulSet")
        else:
            a = alerting[0]
            cfg = self.config_of(a) or {}
            if not (cfg.get("alerting") or {}).get("lease"):
                self.fail(self.name(a), "no [alerting.lease]: replicas would all notify")
            sa = self.pod_spec(a)[0].get("serviceAccountName")
            bound = [b for b in self.of_kind("RoleBinding") if any(s.get("name") == sa for s in b.get("subjects", []))]
            roles = {r["metadata"]["name"]: r for r in self.of_kind("Role")}
            ok = False
            for b in bound:
                for rule in roles.get(b["roleRef"]["name"], {}).get("rules", []):
                    if "leases" in rule.get("resources", []):
                        ok = True
            if not ok:
                self.fail(self.name(a), "its ServiceAccount is not bound to a Role on leases")
            if not a["spec"].get("volumeClaimTemplates"):
                self.fail(self.name(a), "no PVC for the incident store")
        storage_cfgs = [c["storage"] for c in configs if "storage" in c]
        if not storage_cfgs:
            self.fail("mode distributed", "no config has a [storage] section")
        for st in storage_cfgs:
            if st.get("backend") != "clickhouse":
                self.fail("mode distributed", f"storage.backend is {st.get('backend')!r}, not clickhouse")
        bundled = self.value("global", "clickhouse", "bundled", default=True)
        if bundled:
            if len(ch_workloads) != 1 or ch_workloads[0]["kind"] != "StatefulSet":
                self.fail("clickhouse bundled", "no ClickHouse StatefulSet")
            else:
                s = ch_workloads[0]
                if not s["spec"].get("volumeClaimTemplates"):
                    self.fail(self.name(s), "no PVC")
                c = self.pod_spec(s)[0]["containers"][0]
                if not c["image"].startswith("clickhouse/clickhouse-server:"):
                    self.fail(self.name(s), f"image {c['image']}")
                for p in ("livenessProbe", "readinessProbe"):
                    g = (c.get(p) or {}).get("httpGet") or {}
                    port = {x["name"]: x["containerPort"] for x in c["ports"]}.get(g.get("port"), g.get("port"))
                    if g.get("path") != "/ping" or port != 8123:
                        self.fail(self.name(s), f"{p} is not /ping on 8123")
                svc = [x["metadata"]["name"] for x in self.of_kind("Service") if self.component(x) == "clickhouse"]
                for st in storage_cfgs:
                    url = (st.get("clickhouse") or {}).get("url", "")
                    if not any(url == f"http://{n}:8123" for n in svc):
                        self.fail("clickhouse bundled", f"storage.clickhouse.url {url!r} is not the bundled Service")
        else:
            if ch_workloads:
                self.fail("clickhouse external", "a ClickHouse workload is rendered")
            want = self.value("global", "clickhouse", "url")
            for st in storage_cfgs:
                if (st.get("clickhouse") or {}).get("url") != want:
                    self.fail("clickhouse external", f"storage.clickhouse.url is not {want!r}")
                if self.value("global", "clickhouse", "cluster") and (st.get("clickhouse") or {}).get("cluster") != self.value("global", "clickhouse", "cluster"):
                    self.fail("clickhouse external", "storage.clickhouse.cluster is not the one in values")
            secret = self.value("global", "clickhouse", "existingSecret")
            if secret:
                for comp in ("ingest", "query"):
                    for d in self.workload("Deployment", comp):
                        env = {e["name"]: e for e in self.pod_spec(d)[0]["containers"][0].get("env", [])}
                        ref = ((env.get("VIGIL_STORAGE__CLICKHOUSE__PASSWORD") or {}).get("valueFrom") or {}).get("secretKeyRef", {})
                        if ref.get("name") != secret:
                            self.fail(self.name(d), "the ClickHouse password does not come from global.clickhouse.existingSecret")

    def check_sso(self):
        if self.chart != "vigil":
            return
        ui_values = self.value("ui-gateway", default={}) or {}
        mode = (ui_values.get("auth") or {}).get("mode", "token")
        uis = [d for d in self.of_kind("Deployment", "StatefulSet")
               if (self.config_of(d) or {}).get("ui_gateway") is not None]
        if len(uis) != 1:
            self.fail("ui-gateway", f"expected one workload running the UI gateway, found {len(uis)}")
            return
        ui = uis[0]
        auth = (self.config_of(ui)["ui_gateway"].get("auth") or {})
        if auth.get("mode", "token") != mode:
            self.fail(self.name(ui), f"auth.mode is {auth.get('mode')!r}, values say {mode!r}")
        if not str(auth.get("session_secret_file", "")).startswith("/etc/vigil/"):
            self.fail(self.name(ui), "no session_secret_file")
        if mode == "oidc":
            oidc = auth.get("oidc") or {}
            if "client_secret" in oidc:
                self.fail(self.name(ui), "an inline oidc.client_secret")
            ref = ui_values.get("oidcClientSecret") or {}
            if ref.get("name"):
                path = oidc.get("client_secret_file", "")
                if not path:
                    self.fail(self.name(ui), "oidc.client_secret_file is not set")
                spec, _ = self.pod_spec(ui)
                c = [c for c in spec["containers"]][0]
                mount = [m for m in c.get("volumeMounts", []) if path.startswith(m["mountPath"] + "/")]
                vols = {v["name"]: v for v in spec.get("volumes", [])}
                if not mount or (vols.get(mount[0]["name"], {}).get("secret") or {}).get("secretName") != ref["name"]:
                    self.fail(self.name(ui), f"oidc.client_secret_file {path!r} is not mounted from Secret {ref['name']}")
                else:
                    items = vols[mount[0]["name"]]["secret"].get("items") or []
                    if items and not any(i["key"] == ref.get("key") for i in items):
                        self.fail(self.name(ui), f"the Secret's key {ref.get('key')} is not mounted")
            for k in ("issuer", "client_id"):
                if not oidc.get(k):
                    self.fail(self.name(ui), f"oidc.{k} is not set")
        if mode == "token" and not str(auth.get("login_token_file", "")).startswith("/etc/vigil/"):
            self.fail(self.name(ui), "mode token without login_token_file")

    def check_monitoring_and_policies(self):
        g = self.values.get("global", {}) if self.chart == "vigil" else {}
        if g.get("serviceMonitor", {}).get("enabled"):
            monitored = {"agent", "cluster-agent", "ingest", "query", "alerting", "ui-gateway"}
            monitors = {m["spec"]["selector"]["matchLabels"].get("app.kubernetes.io/component") for m in self.of_kind("ServiceMonitor")}
            for svc in self.of_kind("Service"):
                comp = self.component(svc)
                if comp in monitored and comp not in monitors:
                    self.fail(self.name(svc), "serviceMonitor.enabled but no ServiceMonitor selects it")
        elif self.of_kind("ServiceMonitor"):
            self.fail("ServiceMonitor", "rendered with serviceMonitor.enabled false")
        netpol_on = g.get("networkPolicy", {}).get("enabled", True) if self.chart == "vigil" else self.value("networkPolicy", "enabled", default=True)
        policies = self.of_kind("NetworkPolicy")
        if netpol_on:
            selected = {p["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/component") for p in policies}
            for doc in self.of_kind("Deployment", "StatefulSet", "DaemonSet"):
                spec, meta = self.pod_spec(doc)
                comp = (meta.get("labels") or {}).get("app.kubernetes.io/component")
                if spec.get("hostNetwork"):
                    continue
                if comp not in selected:
                    self.fail(self.name(doc), "networkPolicy.enabled but no NetworkPolicy selects its pods")
        elif policies:
            self.fail("NetworkPolicy", "rendered with networkPolicy.enabled false")

    def check_heartbeat_chart(self):
        if self.chart != "vigil-heartbeat":
            return
        sts = self.of_kind("StatefulSet")
        if len(sts) != 1 or not sts[0]["spec"].get("volumeClaimTemplates"):
            self.fail("vigil-heartbeat", "expected one StatefulSet with a PVC")
            return
        cfg = (self.config_of(sts[0]) or {}).get("heartbeat") or {}
        for k in ("api_key_file", "read_only_api_key_file", "ping_key_file"):
            if not str(cfg.get(k, "")).startswith("/etc/vigil/"):
                self.fail(self.name(sts[0]), f"heartbeat.{k} is not a mounted file")
        if not self.of_kind("Service"):
            self.fail("vigil-heartbeat", "no Service")
        if not self.value("keys", "existingSecret") and not self.of_kind("Secret"):
            self.fail("vigil-heartbeat", "no keys Secret generated")

    def check_cronjob(self):
        for cj in self.of_kind("CronJob"):
            for c in self.pod_spec(cj)[0]["containers"]:
                cmd = " ".join(c.get("command", []) + c.get("args", []))
                if re.search(r"https?://", cmd):
                    self.fail(self.name(cj), "a URL written into the command (ping URLs are secrets)")

    def run(self):
        for check in (self.check_resources_and_probes, self.check_security, self.check_checksums,
                      self.check_agent, self.check_cluster_agent, self.check_rbac, self.check_secrets,
                      self.check_no_secrets_in_configmaps, self.check_listen_and_probes,
                      self.check_mode, self.check_sso, self.check_monitoring_and_policies,
                      self.check_heartbeat_chart, self.check_cronjob):
            try:
                check()
            except (KeyError, IndexError, TypeError, AttributeError) as e:
                self.fail(check.__name__, f"the manifest lacks what the check reads: {type(e).__name__}: {e}")
        return self.failures, self.notes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--values", action="append", default=[])
    ap.add_argument("--chart", default="vigil", choices=["vigil", "vigil-heartbeat"])
    args = ap.parse_args()
    with open(args.manifest) as f:
        docs = [d for d in yaml.safe_load_all(f) if isinstance(d, dict)]
    values = {}
    for path in args.values:
        with open(path) as f:
            loaded = yaml.safe_load(f) or {}

        def merge(a, b):
            for k, v in b.items():
                if isinstance(v, dict) and isinstance(a.get(k), dict):
                    merge(a[k], v)
                else:
                    a[k] = v

        merge(values, loaded)
    failures, notes = Checker(docs, values, args.chart).run()
    for n in notes:
        print(n)
    for f in failures:
        print(f)
    print(f"invariants: {len(docs)} objects, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
