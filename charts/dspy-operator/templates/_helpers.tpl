{{/* The release's full name: <release>-dspy-operator, or <release> when it already says dspy-operator. */}}
{{- define "dspy-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 53 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 53 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "dspy-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "dspy-operator.labels" -}}
{{ include "dspy-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dspy-operator
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "dspy-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "dspy-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "dspy-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The operator's namespaces as DSPY_OPERATOR_NAMESPACES wants them (empty: cluster-wide). */}}
{{- define "dspy-operator.namespaces" -}}
{{- join "," .Values.watchNamespaces -}}
{{- end -}}

{{/*
Every rule the operator needs, and nothing else: the same list goes into the ClusterRole
(cluster-wide mode) or into the Role of each watched namespace. Why each verb is here, and
the e2e test that removes it to show the operator then fails, is in the chart README.
*/}}
{{- define "dspy-operator.rules" -}}
# Its own resource: kopf lists and watches it, patches it (its finalizer and its progress
# annotations); the operator re-reads one after a status write met a conflict.
- apiGroups: [dspy.dev]
  resources: [dspydeployments]
  verbs: [get, list, watch, patch]
# Status is written by the operator alone, through the status subresource.
- apiGroups: [dspy.dev]
  resources: [dspydeployments/status]
  verbs: [patch]
# Events on DSPyDeployments (Applied, PhaseChanged, ChildRestored, ...), posted by kopf.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
# Children: watched (label-filtered by the operator: RBAC cannot filter by label), created and
# changed by server-side apply (a PATCH that creates also needs create), pruned when the spec
# drops them. ConfigMaps and Secrets the specs refer to are read by name (get).
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [list, watch, create, patch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [list, watch, create, patch, delete]
{{- end -}}

{{/* What the pre-delete hook needs in every namespace it empties. */}}
{{- define "dspy-operator.uninstallRules" -}}
- apiGroups: [dspy.dev]
  resources: [dspydeployments]
  verbs: [list, delete]
{{- end -}}

{{- define "dspy-operator.hookAnnotations" -}}
helm.sh/hook: pre-delete
helm.sh/hook-weight: {{ . | quote }}
helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
{{- end -}}
