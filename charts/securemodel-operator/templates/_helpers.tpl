{{/* The chart name, or nameOverride: the app.kubernetes.io/name label of the operator's pods. */}}
{{- define "securemodel-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The name of the namespaced objects: the release name if it contains the chart name, else both. */}}
{{- define "securemodel-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "securemodel-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "securemodel-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "securemodel-operator.labels" -}}
app.kubernetes.io/part-of: securemodel
{{ include "securemodel-operator.releaseLabels" . }}
{{- end -}}

{{/* The labels that say which release and chart an object comes from. */}}
{{- define "securemodel-operator.releaseLabels" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{/* The operator pods' selector (kept to the name alone: a Deployment's selector cannot change). */}}
{{- define "securemodel-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "securemodel-operator.name" . }}
{{- end -}}

{{/*
An image reference from {registry, repository, tag, digest}: registry/repository@digest when a
digest is given, else registry/repository:tag, the tag defaulting to the chart's appVersion.
Call with (list .Values.image .Chart.AppVersion).
*/}}
{{- define "securemodel-operator.image" -}}
{{- $image := index . 0 -}}
{{- $defaultTag := index . 1 -}}
{{- $repository := $image.repository -}}
{{- if $image.registry -}}
{{- $repository = printf "%s/%s" $image.registry $image.repository -}}
{{- end -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository (default $defaultTag $image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The names of the CustomResourceDefinitions the chart ships (files/crds/, a copy of crds/), one per line. */}}
{{- define "securemodel-operator.crdNames" -}}
{{- range $path, $_ := .Files.Glob "files/crds/*.yaml" }}
{{ (($.Files.Get $path | fromYaml).metadata).name }}
{{- end }}
{{- end -}}

{{/* Rules on the cluster-scoped resources the operator reads or writes. */}}
{{- define "securemodel-operator.clusterRules" -}}
# kopf notices CRDs being installed, upgraded or removed while it runs (read-only).
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- if .Values.roles.enabled }}
# The rules of securemodel-ml-engineer-client-secrets: get on the client-certificate Secrets by
# name (the API server lets a role be written only by someone who holds what it grants).
- apiGroups: [rbac.authorization.k8s.io]
  resources: [clusterroles]
  resourceNames: [securemodel-ml-engineer-client-secrets]
  verbs: [get, update, patch]
{{- end }}
{{- end -}}
