{{/*
Names, labels and the operator's RBAC rules, defined once for every template.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "sessionizer-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every resource name: fullnameOverride, or <release>-<chart> (just <release> when it
already contains the chart name), cut to the 63 characters a label value allows.
*/}}
{{- define "sessionizer-operator.fullname" -}}
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

{{/* <chart>-<version>, for the helm.sh/chart label. */}}
{{- define "sessionizer-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the operator Pods; never change them (Deployment selectors are immutable). */}}
{{- define "sessionizer-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sessionizer-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Standard labels of every resource of the chart. */}}
{{- define "sessionizer-operator.labels" -}}
helm.sh/chart: {{ include "sessionizer-operator.chart" . }}
{{ include "sessionizer-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: sessionizer
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "sessionizer-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sessionizer-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference. */}}
{{- define "sessionizer-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The Lease the replicas elect a leader with (the operator's --lease-name). */}}
{{- define "sessionizer-operator.leaseName" -}}
{{- default "sessionizer-operator" .Values.leaderElection.leaseName }}
{{- end }}

{{/*
What the operator may do in the namespaces it manages, and nothing more. The same rules go into
the ClusterRole (every namespace) or into one Role per watched namespace.
*/}}
{{- define "sessionizer-operator.rules" -}}
# Exactly the calls operator/RBAC.md lists, and no more. SessionJobs: watched from the cache;
# `patch` only adds and removes the finalizer sessionizer.dev/checkpoints (metadata.finalizers);
# the status is written by server-side apply; the spec is never rewritten (GitOps safe).
- apiGroups: ["sessionizer.dev"]
  resources: ["sessionjobs"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["sessionizer.dev"]
  resources: ["sessionjobs/status"]
  verbs: ["patch"]
# Cutovers: watched (and listed by checkpoint retention, which keeps their final checkpoints);
# created for an automatic side-run cutover; only their status is written.
- apiGroups: ["sessionizer.dev"]
  resources: ["sessionjobcutovers"]
  verbs: ["list", "watch", "create"]
- apiGroups: ["sessionizer.dev"]
  resources: ["sessionjobcutovers/status"]
  verbs: ["patch"]
# A cutover pauses and restores its producers through the scale subresource only.
- apiGroups: ["apps"]
  resources: ["deployments/scale", "statefulsets/scale"]
  verbs: ["get", "patch"]
# Worker Pods are listed to find their IPs (/status, /control/stop); never written.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
# Each job's children, server-side applied (create + patch) and watched; they go with their job
# through owner references and the garbage collector, so no delete.
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["configmaps", "services", "serviceaccounts"]
  verbs: ["list", "watch", "create", "patch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["list", "watch", "create", "patch"]
# Only the Kafka and checkpoint-store credentials a SessionJob names, read by name (never listed
# or watched).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
# Events on SessionJobs.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
