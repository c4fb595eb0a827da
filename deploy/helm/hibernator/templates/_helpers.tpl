{{/* Chart name, release-qualified name and labels. */}}
{{- define "hibernator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hibernator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "hibernator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hibernator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "hibernator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "hibernator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "hibernator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "hibernator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "hibernator.runnerServiceAccountName" -}}
{{- default "hibernator-runner" .Values.runner.serviceAccount.name -}}
{{- end -}}

{{- define "hibernator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "hibernator.runnerImage" -}}
{{- printf "%s:%s" .Values.runner.image.repository (default .Chart.AppVersion .Values.runner.image.tag) -}}
{{- end -}}

{{/* How runner pods reach the controller: https unless plaintext was asked for. */}}
{{- define "hibernator.controllerEndpoint" -}}
{{- default (printf "%s://%s.%s.svc:%v" (ternary "http" "https" .Values.grpc.plaintext) (include "hibernator.fullname" .) .Release.Namespace .Values.service.grpcPort) .Values.controllerEndpoint -}}
{{- end -}}

{{/* The Secret holding the controller's own gRPC CA and certificate. */}}
{{- define "hibernator.grpcTlsSecretName" -}}
{{- default (printf "%s-grpc-tls" (include "hibernator.fullname" .)) .Values.grpc.tls.selfManagedSecretName -}}
{{- end -}}

{{/* Whether the controller keeps its own gRPC certificate. */}}
{{- define "hibernator.selfManagedTls" -}}
{{- if and (not .Values.grpc.plaintext) (not .Values.grpc.tls.secretName) }}true{{ end -}}
{{- end -}}
