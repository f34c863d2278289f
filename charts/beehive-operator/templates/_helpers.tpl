{{/* Chart name. */}}
{{- define "beehive-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name when it contains the chart name, else release-chart. */}}
{{- define "beehive-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "beehive-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "beehive-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "beehive-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "beehive-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: beehive
{{- end }}

{{- define "beehive-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "beehive-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The namespace watched: the release namespace in namespace scope. */}}
{{- define "beehive-operator.watchNamespace" -}}
{{- if eq .Values.rbac.scope "namespace" }}
{{- .Release.Namespace }}
{{- else }}
{{- .Values.watchNamespace }}
{{- end }}
{{- end }}

{{/* The permissions on BeehiveClusters and their children. */}}
{{- define "beehive-operator.rules" -}}
- apiGroups: ["beehive.dev"]
  resources: ["beehiveclusters"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["beehive.dev"]
  resources: ["beehiveclusters/status"]
  verbs: ["get", "patch"]
# Owner references with blockOwnerDeletion (clusters enforcing OwnerReferencesPermission).
- apiGroups: ["beehive.dev"]
  resources: ["beehiveclusters/finalizers"]
  verbs: ["update"]
# Children applied with server-side apply (create + patch) and pruned (delete). Secrets are
# only read (referenced URLs, content hash) and created when generated: never listed,
# updated or deleted.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create"]
- apiGroups: [""]
  resources: ["configmaps", "persistentvolumeclaims"]
  verbs: ["get", "list", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "create", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies", "ingresses"]
  verbs: ["get", "list", "create", "patch", "delete"]
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors", "prometheusrules"]
  verbs: ["get", "list", "create", "patch", "delete"]
# Datastores run by their own operators (spec.<datastore>.mode cloudnativepg,
# rabbitmq-operator, eck). Never deleted by the operator (the garbage collector removes them
# with their BeehiveCluster), so no delete.
- apiGroups: ["postgresql.cnpg.io"]
  resources: ["clusters"]
  verbs: ["get", "list", "create", "patch"]
- apiGroups: ["rabbitmq.com"]
  resources: ["rabbitmqclusters"]
  verbs: ["get", "list", "create", "patch"]
- apiGroups: ["elasticsearch.k8s.elastic.co"]
  resources: ["elasticsearches"]
  verbs: ["get", "list", "create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
