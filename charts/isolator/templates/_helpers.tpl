{{/* The namespace isolator runs in. */}}
{{- define "isolator.namespace" -}}
{{- default .Release.Namespace .Values.namespace -}}
{{- end -}}

{{/* Labels every object carries: isolator's own, then Helm's. */}}
{{- define "isolator.labels" -}}
app.kubernetes.io/part-of: isolator
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The labels that select the webhook's pods. */}}
{{- define "isolator.webhookSelector" -}}
app.kubernetes.io/name: isolator
app.kubernetes.io/component: webhook
{{- end -}}

{{/* The labels that select the node agent's pods. */}}
{{- define "isolator.nodeSelector" -}}
app.kubernetes.io/name: isolator
app.kubernetes.io/component: node
{{- end -}}

{{/* An image reference from {repository, tag}; the tag defaults to appVersion. */}}
{{- define "isolator.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/* The webhook's service account, as the apiserver names it. */}}
{{- define "isolator.serviceAccount" -}}
{{- printf "system:serviceaccount:%s:%s" (include "isolator.namespace" .root) .name -}}
{{- end -}}
