{{/* Names, labels and security contexts of the vigil-heartbeat chart. */}}

{{- define "vigil-heartbeat.fullname" -}}
{{- if contains "heartbeat" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-vigil-heartbeat" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "vigil-heartbeat.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "vigil-heartbeat.selectorLabels" . }}
app.kubernetes.io/part-of: vigil
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "vigil-heartbeat.selectorLabels" -}}
app.kubernetes.io/name: vigil-heartbeat
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: heartbeat
{{- end -}}

{{- define "vigil-heartbeat.keysSecret" -}}
{{- default (printf "%s-keys" (include "vigil-heartbeat.fullname" .)) .Values.keys.existingSecret -}}
{{- end -}}

{{/* The integrations, their Secrets mounted as files (as in the vigil
chart's _helpers.tpl, whose copy this is). */}}
{{- define "vigil-heartbeat.integrationSecretFields" -}}
{{- toYaml (dict "slack" "webhook_url" "teams" "webhook_url" "pagerduty" "routing_key" "opsgenie" "api_key" "email" "password" "webhook" "url") -}}
{{- end -}}

{{- define "vigil-heartbeat.config.integrations" -}}
{{- $fields := include "vigil-heartbeat.integrationSecretFields" . | fromYaml -}}
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

{{- define "vigil-heartbeat.integrationVolumes" -}}
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

{{- define "vigil-heartbeat.integrationMounts" -}}
{{- range $i, $it := .list }}
{{- with $it.secretRef }}
- name: integration-{{ $i }}
  mountPath: /etc/vigil/integrations/{{ $it.name }}
  readOnly: true
{{- end }}
{{- end }}
{{- end -}}
