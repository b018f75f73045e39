{{/* kfx serving: the predictor spec of one InferenceService (custom container: the kfx serving image).
     The storage initializer downloads STORAGE_URI to /mnt/models (KServe custom-container contract). */}}
{{- define "kfx.serving.predictor" -}}
{{- $v := .root.Values -}}
minReplicas: {{ $v.serving.minReplicas }}
maxReplicas: {{ $v.serving.maxReplicas }}
serviceAccountName: {{ $v.serving.serviceAccount }}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  fsGroup: 10001
  seccompProfile:
    type: RuntimeDefault
{{- with $v.image.pullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if and $v.serving.logger.enabled $v.serving.sink.enabled }}
logger:
  mode: {{ $v.serving.logger.mode }}
  url: http://kfx-serving-sink.{{ .root.Release.Namespace }}.svc.cluster.local:9090
{{- end }}
{{- if .canary }}
canaryTrafficPercent: {{ .canary }}
{{- end }}
containers:
  - name: kserve-container
    image: "{{ $v.image.registry }}/{{ $v.serving.imageName }}:{{ $v.image.tag }}"
    imagePullPolicy: {{ $v.image.pullPolicy }}
    args: ["serve", "--model-dir", "/mnt/models", "--model-name", {{ $v.serving.modelName | quote }}, "--http-port", "8080"]
    env:
      - name: STORAGE_URI
        value: {{ .storageUri | quote }}
      - name: POD_NAMESPACE
        valueFrom:
          fieldRef: {fieldPath: metadata.namespace}
    ports:
      - name: http1
        containerPort: 8080
        protocol: TCP
    readinessProbe:
      httpGet: {path: /v2/health/ready, port: 8080}
      periodSeconds: 5
    livenessProbe:
      httpGet: {path: /v2/health/live, port: 8080}
      initialDelaySeconds: 30
      periodSeconds: 20
    resources:
      {{- toYaml $v.serving.resources | nindent 6 }}
    securityContext:
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      runAsNonRoot: true
      runAsUser: 10001
      capabilities:
        drop: ["ALL"]
{{- end }}

{{- define "kfx.serving.isvc" -}}
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: {{ .name }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "kfx.labels" .root | nindent 4 }}
    app.kubernetes.io/component: serving
    kfx.dev/model: {{ .root.Values.serving.modelName }}
    {{- with .role }}
    kfx.dev/role: {{ . }}
    {{- end }}
  annotations:
    argocd.argoproj.io/sync-wave: "2"
    serving.kserve.io/enable-prometheus-scraping: "true"
    {{- if .raw }}
    serving.kserve.io/deploymentMode: RawDeployment
    {{- end }}
spec:
  predictor:
    {{- include "kfx.serving.predictor" . | nindent 4 }}
{{- end }}
