{{/*
Templates shared by the umbrella chart and every subchart. Helm loads the
defines of all charts into one set, so the subcharts call these; each takes
a context whose .Values has `global` (the umbrella's or a subchart's).
Names are `<release>-<component>`, the same in both modes, so that agents,
Ingresses and the CronJob need not know the mode.
*/}}

{{/* <release>-<component>; (dict "root" $ "component" "ingest") */}}
{{- define "vigil.name" -}}
{{- printf "%s-%s" .root.Release.Name .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "vigil.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: vigil
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: vigil
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end -}}

{{- define "vigil.selectorLabels" -}}
app.kubernetes.io/name: vigil
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* "true" in distributed mode, "" in the monolith; fails on another mode. */}}
{{- define "vigil.distributed" -}}
{{- $mode := .Values.global.mode -}}
{{- if eq $mode "distributed" -}}true
{{- else if ne $mode "monolith" -}}{{ fail (printf "global.mode: %q is neither monolith nor distributed" $mode) }}
{{- end -}}
{{- end -}}

{{/* The pods behind a service's Service: its own, or the monolith's. */}}
{{- define "vigil.workloadComponent" -}}
{{- if include "vigil.distributed" .root -}}{{ .component }}{{- else -}}monolith{{- end -}}
{{- end -}}

{{- define "vigil.image" -}}
{{- $image := .Values.global.image -}}
{{- printf "%s:%s" $image.repository (default .Chart.AppVersion $image.tag) -}}
{{- end -}}

{{- define "vigil.imagePullSecrets" -}}
{{- with .Values.global.imagePullSecrets }}
imagePullSecrets:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Secret names. */}}
{{- define "vigil.secretsName" -}}
{{- include "vigil.name" (dict "root" . "component" "secrets") -}}
{{- end -}}

{{- define "vigil.apiKeysName" -}}
{{- default (include "vigil.name" (dict "root" . "component" "api-keys")) .Values.global.apiKeys.existingSecret -}}
{{- end -}}

{{/* The first project: the agents write to it, alerting inspects it. */}}
{{- define "vigil.mainProject" -}}
{{- (first .Values.global.projects).name -}}
{{- end -}}

{{/* The data key of the one API key the agents and alerting send. */}}
{{- define "vigil.clientKey" -}}
{{- default (include "vigil.mainProject" .) .Values.global.apiKeys.clientKey -}}
{{- end -}}

{{- define "vigil.clientKeyFile" -}}
{{- printf "/etc/vigil/api-keys/%s" (include "vigil.clientKey" .) -}}
{{- end -}}

{{/* Endpoints, by Service name (the same in both modes). */}}
{{- define "vigil.ingestEndpoint" -}}
{{- printf "http://%s:4317" (include "vigil.name" (dict "root" . "component" "ingest")) -}}
{{- end -}}
{{- define "vigil.queryEndpoint" -}}
{{- printf "http://%s:7410" (include "vigil.name" (dict "root" . "component" "query")) -}}
{{- end -}}
{{- define "vigil.alertingEndpoint" -}}
{{- printf "http://%s:7420" (include "vigil.name" (dict "root" . "component" "alerting")) -}}
{{- end -}}

{{/* Pod and container security: non-root, read-only root file system. */}}
{{- define "vigil.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "vigil.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
privileged: false
capabilities:
  drop: [ALL]
{{- end -}}

{{/* Startup, liveness and readiness probes on a service's HTTP port (its
/healthz and /readyz, crates/runtime/src/http.rs). */}}
{{- define "vigil.probes" -}}
startupProbe:
  httpGet:
    path: /healthz
    port: {{ . }}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 60
livenessProbe:
  httpGet:
    path: /healthz
    port: {{ . }}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 6
readinessProbe:
  httpGet:
    path: /readyz
    port: {{ . }}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 3
{{- end -}}

{{/* Scheduling fields of a pod from a service's values. */}}
{{- define "vigil.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* `[log]` */}}
{{- define "vigil.config.log" -}}
{{- toYaml (dict "level" .Values.global.log.level "format" .Values.global.log.format) -}}
{{- end -}}

{{/* `[[projects]]`, keys from files (one file per project in the API keys
Secret), in the order of global.projects: the first is the agents' project,
which `vigil up` (the monolith) takes for its alerting worker as the first
project with a key. */}}
{{- define "vigil.config.projects" -}}
projects:
{{- range .Values.global.projects }}
  - name: {{ .name | quote }}
    api_keys_file: {{ printf "/etc/vigil/api-keys/%s" .name | quote }}
{{- end }}
{{- end -}}

{{/* `[storage]` of distributed mode (ClickHouse). */}}
{{- define "vigil.config.storage" -}}
{{- $ch := .Values.global.clickhouse -}}
{{- $clickhouse := dict "database" $ch.database -}}
{{- if $ch.bundled -}}
{{- $_ := set $clickhouse "url" (printf "http://%s:8123" (include "vigil.name" (dict "root" . "component" "clickhouse"))) -}}
{{- $_ := set $clickhouse "user" "vigil" -}}
{{- else -}}
{{- if not $ch.url -}}{{ fail "global.clickhouse.url: set the external ClickHouse server's HTTP interface (http://host:8123), or global.clickhouse.bundled: true" }}{{- end -}}
{{- $_ := set $clickhouse "url" $ch.url -}}
{{- with $ch.cluster }}{{ $_ := set $clickhouse "cluster" . }}{{ end -}}
{{- end -}}
{{- toYaml (dict "backend" "clickhouse" "clickhouse" $clickhouse "retention" .Values.global.storage.retention) -}}
{{- end -}}

{{/* ClickHouse credentials from Secrets, as environment variables (Vigil
has no *_file key for them). */}}
{{- define "vigil.clickhouseEnv" -}}
{{- $ch := .Values.global.clickhouse -}}
{{- if $ch.bundled }}
- name: VIGIL_STORAGE__CLICKHOUSE__PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "vigil.secretsName" . }}
      key: clickhouse-password
{{- else if $ch.existingSecret }}
{{- if $ch.userKey }}
- name: VIGIL_STORAGE__CLICKHOUSE__USER
  valueFrom:
    secretKeyRef:
      name: {{ $ch.existingSecret }}
      key: {{ $ch.userKey }}
{{- end }}
{{- if $ch.passwordKey }}
- name: VIGIL_STORAGE__CLICKHOUSE__PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $ch.existingSecret }}
      key: {{ $ch.passwordKey }}
{{- end }}
{{- end }}
{{- end -}}

{{/* A service's `config:` values deep-merged under the keys the chart
sets: (dict "config" <user map> "forced" <chart map>). Chart keys win. */}}
{{- define "vigil.mergeSection" -}}
{{- toYaml (mustMergeOverwrite (deepCopy (.config | default dict)) .forced) -}}
{{- end -}}

{{/* Secret file of a notification target, per target. */}}
{{- define "vigil.integrationSecretFields" -}}
{{- toYaml (dict "slack" "webhook_url" "teams" "webhook_url" "pagerduty" "routing_key" "opsgenie" "api_key" "email" "password" "webhook" "url") -}}
{{- end -}}

{{/* `[[<section>.integrations]]` with each secret as a mounted file:
(dict "list" <values> "section" "alerting.integrations"). */}}
{{- define "vigil.config.integrations" -}}
{{- $fields := include "vigil.integrationSecretFields" . | fromYaml -}}
{{- $out := list -}}
{{- range $i, $it := .list -}}
{{- $at := printf "%s[%d]" $.section $i -}}
{{- if not $it.name }}{{ fail (printf "%s: name is required" $at) }}{{ end -}}
{{- $found := list -}}
{{- range $target, $_ := $fields -}}
{{- if hasKey $it $target }}{{ $found = append $found $target }}{{ end -}}
{{- end -}}
{{- if ne (len $found) 1 }}{{ fail (printf "%s (%s): set exactly one of slack, pagerduty, teams, opsgenie, email, webhook" $at $it.name) }}{{ end -}}
{{- $target := first $found -}}
{{- $field := get $fields $target -}}
{{- $settings := deepCopy (get $it $target | default dict) -}}
{{- range $k := list $field (printf "%s_file" $field) -}}
{{- if hasKey $settings $k }}{{ fail (printf "%s.%s.%s: secrets are never written into the ConfigMap; name the Secret in %s.secretRef {name, key}" $at $target $k $at) }}{{ end -}}
{{- end -}}
{{- if eq $target "webhook" -}}
{{- range $header, $_ := ($settings.headers | default dict) -}}
{{- if regexMatch "(?i)(authorization|token|secret|key|cookie|password|auth)" $header }}{{ fail (printf "%s.webhook.headers.%s: header values are written into the ConfigMap (Vigil has no file for them); put the credential in the URL (secretRef) instead" $at $header) }}{{ end -}}
{{- end -}}
{{- end -}}
{{- with $it.secretRef -}}
{{- if or (not .name) (not .key) }}{{ fail (printf "%s.secretRef: name and key are required" $at) }}{{ end -}}
{{- $_ := set $settings (printf "%s_file" $field) (printf "/etc/vigil/integrations/%s/%s" $it.name .key) -}}
{{- else -}}
{{- if ne $target "email" }}{{ fail (printf "%s (%s): secretRef {name, key} naming the Secret that holds the %s is required" $at $it.name $field) }}{{ end -}}
{{- end -}}
{{- $entry := omit $it "secretRef" -}}
{{- $_ := set $entry $target $settings -}}
{{- $out = append $out $entry -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* Volumes and mounts of the integrations' Secrets: (dict "list" …). */}}
{{- define "vigil.integrationVolumes" -}}
{{- range $i, $it := .list }}
{{- with $it.secretRef }}
- name: integration-{{ $i }}
  secret:
    secretName: {{ .name }}
    items:
      - key: {{ .key }}
        path: {{ .key }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "vigil.integrationMounts" -}}
{{- range $i, $it := .list }}
{{- with $it.secretRef }}
- name: integration-{{ $i }}
  mountPath: /etc/vigil/integrations/{{ $it.name }}
  readOnly: true
{{- end }}
{{- end }}
{{- end -}}

{{/* `[alerting]` as the chart writes it, for both modes. */}}
{{- define "vigil.config.alerting" -}}
{{- $v := .alerting -}}
{{- $root := .root -}}
{{- $forced := dict
  "grpc" (dict "listen" "0.0.0.0:7420")
  "http" (dict "listen" "0.0.0.0:7421")
  "project" (include "vigil.mainProject" $root)
  "api_key_file" (include "vigil.clientKeyFile" $root)
  "interval" $v.interval
  "retention" $v.retention
  "ui_url" $root.Values.global.publicUrl
  "query_endpoint" (include "vigil.queryEndpoint" $root)
-}}
{{- with $v.inspections }}{{ $_ := set $forced "inspections" . }}{{ end -}}
{{- with $v.overrides }}{{ $_ := set $forced "overrides" . }}{{ end -}}
{{- with $v.integrations }}{{ $_ := set $forced "integrations" (include "vigil.config.integrations" (dict "list" . "section" "alerting.integrations") | fromYamlArray) }}{{ end -}}
{{- if .lease -}}
{{- $_ := set $forced "lease" (dict "name" (include "vigil.name" (dict "root" $root "component" "alerting")) "duration" $v.lease.duration "renew_every" $v.lease.renew_every) -}}
{{- end -}}
{{- include "vigil.mergeSection" (dict "config" $v.config "forced" $forced) -}}
{{- end -}}

{{/* `[ingest]` */}}
{{- define "vigil.config.ingest" -}}
{{- include "vigil.mergeSection" (dict "config" .ingest.config "forced" (dict "grpc" (dict "listen" "0.0.0.0:4317") "http" (dict "listen" "0.0.0.0:4318"))) -}}
{{- end -}}

{{/* `[query]` */}}
{{- define "vigil.config.query" -}}
{{- $forced := dict "grpc" (dict "listen" "0.0.0.0:7410") "http" (dict "listen" "0.0.0.0:7411") -}}
{{- with .query.slo }}{{ $_ := set $forced "slo" . }}{{ end -}}
{{- include "vigil.mergeSection" (dict "config" .query.config "forced" $forced) -}}
{{- end -}}

{{/* `[ui_gateway]`: (dict "root" $ "ui" <ui-gateway values>). */}}
{{- define "vigil.config.uiGateway" -}}
{{- $root := .root -}}
{{- $ui := .ui -}}
{{- $auth := deepCopy ($ui.auth | default dict) -}}
{{- range $k := list "session_secret" "session_secret_file" "login_token" "login_token_file" "public_url" -}}
{{- if hasKey $auth $k }}{{ fail (printf "ui-gateway.auth.%s: set by the chart (secrets are generated into Secret <release>-secrets; the URL is global.publicUrl)" $k) }}{{ end -}}
{{- end -}}
{{- $oidc := deepCopy ($auth.oidc | default dict) -}}
{{- range $k := list "client_secret" "client_secret_file" -}}
{{- if hasKey $oidc $k }}{{ fail (printf "ui-gateway.auth.oidc.%s: the client secret comes from ui-gateway.oidcClientSecret {name, key} (an existing Secret)" $k) }}{{ end -}}
{{- end -}}
{{- if and (eq ($auth.mode | default "token") "forward_auth") (not (and $root.Values.global.networkPolicy.enabled $ui.networkPolicy.from)) -}}
{{- fail "ui-gateway.auth.mode forward_auth: the gateway trusts the user headers of any peer in trusted_proxies, so only the proxy may reach it: set global.networkPolicy.enabled: true and list the proxy's pods or namespace (for an HTTPRoute, the Gateway's proxy pods too) in ui-gateway.networkPolicy.from" -}}
{{- end -}}
{{- if and (eq ($auth.mode | default "token") "oidc") $ui.oidcClientSecret.name -}}
{{- $_ := set $oidc "client_secret_file" (printf "/etc/vigil/oidc/%s" $ui.oidcClientSecret.key) -}}
{{- end -}}
{{- if $oidc }}{{ $_ := set $auth "oidc" $oidc }}{{ end -}}
{{- range $k := list "oidc" "forward_auth" "roles" -}}
{{- if and (hasKey $auth $k) (empty (get $auth $k)) }}{{ $_ := unset $auth $k }}{{ end -}}
{{- end -}}
{{- $_ := set $auth "public_url" $root.Values.global.publicUrl -}}
{{- $_ := set $auth "session_secret_file" "/etc/vigil/secrets/session-secret" -}}
{{- if eq ($auth.mode | default "token") "token" -}}
{{- $_ := set $auth "login_token_file" "/etc/vigil/secrets/login-token" -}}
{{- end -}}
{{- $projects := list -}}
{{- range $root.Values.global.projects }}{{ $projects = append $projects .name }}{{ end -}}
{{- $forced := dict
  "http" (dict "listen" "0.0.0.0:7480")
  "projects" $projects
  "auth" $auth
-}}
{{- if .distributed -}}
{{- $_ := set $forced "query_endpoint" (include "vigil.queryEndpoint" $root) -}}
{{- $_ := set $forced "alerting_endpoint" (include "vigil.alertingEndpoint" $root) -}}
{{- $_ := set $forced "gateway_key_file" "/etc/vigil/secrets/gateway-key" -}}
{{- end -}}
{{- include "vigil.mergeSection" (dict "config" $ui.config "forced" $forced) -}}
{{- end -}}

{{/* NetworkPolicy ingress rule for the metrics/health ports; none when
global.networkPolicy.metricsFrom is empty (an empty `from` would admit
everyone). (dict "root" $ "ports" (list 7421)) */}}
{{- define "vigil.metricsIngress" -}}
{{- with .root.Values.global.networkPolicy.metricsFrom }}
- from:
{{- toYaml . | nindent 4 }}
  ports:
{{- range $.ports }}
    - port: {{ . }}
      protocol: TCP
{{- end }}
{{- end }}
{{- end -}}

{{/* A ServiceMonitor for a Service's `http` port: (dict "root" $ "component" "ingest"). */}}
{{- define "vigil.serviceMonitor" -}}
{{- $sm := .root.Values.global.serviceMonitor -}}
{{- if $sm.enabled }}
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include "vigil.name" . }}
  labels:
    {{- include "vigil.labels" . | nindent 4 }}
    {{- with $sm.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  selector:
    matchLabels:
      {{- include "vigil.selectorLabels" . | nindent 6 }}
  endpoints:
    - port: http
      path: /metrics
      interval: {{ $sm.interval }}
{{- end }}
{{- end -}}
