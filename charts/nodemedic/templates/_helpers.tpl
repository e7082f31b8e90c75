{{/*
Names. The chart follows the usual Helm conventions: `fullname` is the release
name, or `<release>-nodemedic` when the release name does not already contain
the chart name; both can be overridden. Component objects add `-agent` or
`-operator`.
*/}}
{{- define "nodemedic.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "nodemedic.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 54 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "nodemedic.agent.fullname" -}}
{{- printf "%s-agent" (include "nodemedic.fullname" .) }}
{{- end }}

{{- define "nodemedic.operator.fullname" -}}
{{- printf "%s-operator" (include "nodemedic.fullname" .) }}
{{- end }}

{{- define "nodemedic.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels shared by every object. */}}
{{- define "nodemedic.labels" -}}
helm.sh/chart: {{ include "nodemedic.chart" . }}
app.kubernetes.io/name: {{ include "nodemedic.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: nodemedic
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of a component; call with (dict "root" $ "component" "agent"). */}}
{{- define "nodemedic.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nodemedic.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Every label of a component's objects; call like nodemedic.selectorLabels. */}}
{{- define "nodemedic.componentLabels" -}}
{{ include "nodemedic.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "nodemedic.agent.serviceAccountName" -}}
{{- if .Values.agent.serviceAccount.create }}
{{- default (include "nodemedic.agent.fullname" .) .Values.agent.serviceAccount.name }}
{{- else }}
{{- required "agent.serviceAccount.name is required when agent.serviceAccount.create=false" .Values.agent.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "nodemedic.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "nodemedic.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create=false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The user name the API server gives the agent's ServiceAccount tokens. */}}
{{- define "nodemedic.agent.username" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "nodemedic.agent.serviceAccountName" .) }}
{{- end }}

{{/* The operator's user name in the API server's user info. */}}
{{- define "nodemedic.operator.username" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "nodemedic.operator.serviceAccountName" .) }}
{{- end }}

{{/* Container image: repository@digest when a digest is set, else repository:tag (tag defaults to appVersion). */}}
{{- define "nodemedic.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Parent directory of the reboot sentinel (the only host path the agent may write). */}}
{{- define "nodemedic.agent.sentinelDir" -}}
{{- dir .Values.agent.rebootSentinel.path }}
{{- end }}

{{/* Checks that the schema cannot express. */}}
{{- define "nodemedic.validate" -}}
{{- if and (gt (int .Values.operator.replicas) 1) (not .Values.operator.leaderElection.enabled) }}
{{- fail "operator.replicas > 1 needs operator.leaderElection.enabled=true: two active operators would each act on the same nodes" }}
{{- end }}
{{- if and .Values.agent.rebootSentinel.enabled (or (eq (include "nodemedic.agent.sentinelDir" .) "/") (contains ".." .Values.agent.rebootSentinel.path)) }}
{{- fail (printf "agent.rebootSentinel.path %q must be a file inside a directory other than / (the chart mounts that directory read-write from the host) and must not contain '..'" .Values.agent.rebootSentinel.path) }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not (or .Values.agent.service.enabled .Values.operator.service.enabled)) }}
{{- fail "metrics.serviceMonitor.enabled needs agent.service.enabled or operator.service.enabled: a ServiceMonitor scrapes through the metrics Services" }}
{{- end }}
{{- end }}
