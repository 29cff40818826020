{{/*
Names. Kubernetes object names are DNS labels (63 characters); Helm's convention
<release>-<chart> unless the release name already contains the chart name.
*/}}
{{- define "mlkube.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mlkube.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "mlkube.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Name of operator instance i: the first is <fullname>-operator, standbys get -standby-<i>. */}}
{{- define "mlkube.operatorName" -}}
{{- $root := index . 0 }}
{{- $i := index . 1 }}
{{- if eq (int $i) 0 }}
{{- printf "%s-operator" (include "mlkube.fullname" $root) | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-operator-standby-%d" (include "mlkube.fullname" $root | trunc 44 | trimSuffix "-") (int $i) }}
{{- end }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "mlkube.labels" -}}
helm.sh/chart: {{ include "mlkube.chart" . }}
{{ include "mlkube.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mlkube
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select the operator pods (stable across upgrades: never the version). */}}
{{- define "mlkube.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlkube.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "mlkube.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mlkube.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference: a digest pins it; otherwise the tag, defaulting to appVersion. */}}
{{- define "mlkube.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Peering is on for any HA setup, or when asked for. */}}
{{- define "mlkube.peeringEnabled" -}}
{{- if or .Values.operator.peering.enabled (gt (int .Values.operator.replicas) 1) }}true{{ end }}
{{- end }}

{{- define "mlkube.peeringName" -}}
{{- default (include "mlkube.fullname" .) .Values.operator.peering.name }}
{{- end }}

{{/* The metrics port is opened only when something scrapes it. */}}
{{- define "mlkube.metricsEnabled" -}}
{{- if or .Values.metrics.service.enabled .Values.metrics.podMonitor.enabled }}true{{ end }}
{{- end }}
