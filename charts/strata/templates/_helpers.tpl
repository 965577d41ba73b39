{{/* The chart name (nameOverride). */}}
{{- define "strata.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{/* The object name prefix: fullnameOverride, else the release name (with the chart name unless it has it). */}}
{{- define "strata.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The controller's objects' name: ServiceAccount, ClusterRole, Deployment, Service (strata-controller). */}}
{{- define "strata.controller.name" -}}
{{- include "strata.fullname" . }}-controller
{{- end }}

{{/* The controller's selector labels. */}}
{{- define "strata.controller.selectorLabels" -}}
app.kubernetes.io/name: {{ include "strata.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{/* Labels of every controller object. */}}
{{- define "strata.controller.labels" -}}
{{ include "strata.controller.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: strata
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* The controller image (and the default build image): repository:tag, tag defaulting to appVersion. */}}
{{- define "strata.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* A --build-toleration value from {key, value?, effect?}: key[=value][:effect]. */}}
{{- define "strata.buildToleration" -}}
{{- .key }}{{ if hasKey . "value" }}={{ .value }}{{ end }}{{ if .effect }}:{{ .effect }}{{ end }}
{{- end }}

{{/* The agent's objects' name: ServiceAccount, ClusterRole, Role, DaemonSet (strata-agent). */}}
{{- define "strata.agent.name" -}}
{{- include "strata.fullname" . }}-agent
{{- end }}

{{/* The build pods' ServiceAccount (strata-build). */}}
{{- define "strata.build.name" -}}
{{- include "strata.fullname" . }}-build
{{- end }}

{{/* Selector labels of a component: (dict "ctx" $ "component" "agent"). */}}
{{- define "strata.componentSelectorLabels" -}}
app.kubernetes.io/name: {{ include "strata.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Labels of every object of a component: (dict "ctx" $ "component" "agent"). */}}
{{- define "strata.componentLabels" -}}
{{ include "strata.componentSelectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: strata
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
{{- end }}

{{/* A role's image: its override, else the chart's image. */}}
{{- define "strata.roleImage" -}}
{{- default (include "strata.image" .ctx) .image }}
{{- end }}
