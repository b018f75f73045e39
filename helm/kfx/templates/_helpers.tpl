{{/* Common labels. */}}
{{- define "kfx.labels" -}}
app.kubernetes.io/part-of: kfx
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* The S3 endpoint (host:port) the pipeline steps and the launcher use. */}}
{{- define "kfx.s3Endpoint" -}}
{{- if .Values.minio.enabled -}}
kfx-minio.{{ .Release.Namespace }}.svc.cluster.local:9000
{{- else -}}
{{- required "s3.externalEndpoint is required when minio.enabled is false" .Values.s3.externalEndpoint -}}
{{- end -}}
{{- end }}

{{/* The compiled pipeline IR: the pipeline.ir value, else files/pipeline.yaml. */}}
{{- define "kfx.pipelineIR" -}}
{{- if .Values.pipeline.ir -}}
{{- .Values.pipeline.ir -}}
{{- else -}}
{{- .Files.Get "files/pipeline.yaml" -}}
{{- end -}}
{{- end }}

{{/* Node selector of the CPU pool for the platform's own pods. */}}
{{- define "kfx.cpuPlacement" -}}
{{- with .Values.nodePools.cpu.labels }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodePools.cpu.taints }}
tolerations:
{{- range . }}
  - key: {{ .key | quote }}
    operator: {{ .operator | default "Exists" | quote }}
    {{- if .value }}
    value: {{ .value | quote }}
    {{- end }}
    effect: {{ .effect | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Restricted pod / container security contexts. */}}
{{- define "kfx.podSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  fsGroup: 10001
  seccompProfile:
    type: RuntimeDefault
{{- end }}
{{- define "kfx.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  runAsNonRoot: true
  runAsUser: 10001
  capabilities:
    drop: ["ALL"]
{{- end }}
