{{/*
Names, labels and the pieces every workload shares. Checks that values.schema.json
cannot express (they compare two values) fail the render here, with the fix.
*/}}

{{- define "ais.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ais.fullname" -}}
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

{{/* Name of one component's objects: "<fullname>-<component>" within 63 characters. */}}
{{- define "ais.component" -}}
{{- printf "%s-%s" (include "ais.fullname" .root | trunc (int (sub 62 (len .component))) | trimSuffix "-") .component }}
{{- end }}

{{- define "ais.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ais.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "ais.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ais.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: infra-ai-streaming
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{- define "ais.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "ais.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ais.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ais.secretName" -}}
{{- default (include "ais.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/* The config file: the `config` value, then one [[keys]] table per API key. */}}
{{- define "ais.configToml" -}}
# ais config file, rendered by the infra-ai-streaming chart.
{{- with .Values.config }}
{{ . }}
{{- end }}
{{- range .Values.apiKeys }}

[[keys]]
tenant = {{ .tenant | quote }}
sha256 = {{ .sha256 | quote }}
kind = {{ default "all" .kind | quote }}
{{- end }}
{{ end }}

{{/* Effective maximum of stream replicas: the partition count unless set lower. */}}
{{- define "ais.streamMaxReplicas" -}}
{{- $partitions := int .Values.kafka.partitions }}
{{- $max := $partitions }}
{{- with .Values.autoscaling.stream.maxReplicas }}{{ $max = int . }}{{ end }}
{{- if gt $max $partitions }}
{{- fail (printf "autoscaling.stream.maxReplicas (%d) is above kafka.partitions (%d): a stream replica beyond the partition count owns no partition; lower it or add partitions" $max $partitions) }}
{{- end }}
{{- if lt $max (int .Values.autoscaling.stream.minReplicas) }}
{{- fail (printf "autoscaling.stream.minReplicas (%d) is above its maximum (%d)" (int .Values.autoscaling.stream.minReplicas) $max) }}
{{- end }}
{{- $max }}
{{- end }}

{{/* "keda", "hpa" or "" (stream autoscaling off). */}}
{{- define "ais.streamAutoscaler" -}}
{{- if .Values.autoscaling.stream.enabled }}
{{- $mode := .Values.autoscaling.stream.mode }}
{{- if eq $mode "auto" }}
{{- if .Capabilities.APIVersions.Has "keda.sh/v1alpha1/ScaledObject" }}keda{{ else }}hpa{{ end }}
{{- else }}
{{- $mode }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Environment of an ais container: the shared ConfigMap, then only the secrets its command
uses (ingest never sees the ClickHouse password). Redis is ingest's overflow, and the
budget holds that query reserves against and stream settles. Every command checks the
whole config file, whose [alerts.webhook] needs its secret.
*/}}
{{- define "ais.env" -}}
{{- $secret := include "ais.secretName" .root }}
envFrom:
  - configMapRef:
      name: {{ include "ais.fullname" .root }}
env:
  {{- if ne .component "ingest" }}
  - name: AIS_CLICKHOUSE
    valueFrom:
      secretKeyRef:
        name: {{ $secret }}
        key: clickhouse-url
  {{- end }}
  {{- if eq .component "stream" }}
  # The member's lasting name in the consumer group: a container restarted in its pod
  # takes its partitions back without a rebalance.
  - name: AIS_INSTANCE_ID
    valueFrom:
      fieldRef:
        fieldPath: metadata.name
  {{- end }}
  {{- if has .component (list "ingest" "query" "stream") }}
  - name: AIS_REDIS
    valueFrom:
      secretKeyRef:
        name: {{ $secret }}
        key: redis-url
        optional: true
  {{- end }}
  - name: AIS_WEBHOOK_SECRET
    valueFrom:
      secretKeyRef:
        name: {{ $secret }}
        key: webhook-secret
        optional: true
  {{- with (index .root.Values .component).env }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/*
Volumes of every ais pod: the config file from the Secret, a writable /tmp, and the
receivers' CA bundle when given (every command reads the whole config file, ca_file
included).
*/}}
{{- define "ais.volumes" -}}
volumes:
  - name: config
    secret:
      secretName: {{ include "ais.secretName" . }}
      items:
        - key: config.toml
          path: config.toml
  - name: tmp
    emptyDir: {}
  {{- if .Values.alerts.receiverCa }}
  - name: receiver-ca
    configMap:
      name: {{ include "ais.fullname" . }}-receiver-ca
  {{- end }}
{{- end }}

{{- define "ais.volumeMounts" -}}
volumeMounts:
  - name: config
    mountPath: /etc/ais
    readOnly: true
  - name: tmp
    mountPath: /tmp
  {{- if .Values.alerts.receiverCa }}
  - name: receiver-ca
    mountPath: /etc/ais-receiver-ca
    readOnly: true
  {{- end }}
{{- end }}

{{/* Pod-template annotations that roll the pods when their config changes. */}}
{{- define "ais.checksums" -}}
checksum/config: {{ print (include (print .Template.BasePath "/configmap.yaml") .) (include (print .Template.BasePath "/receiverca.yaml") .) | sha256sum }}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}

{{- define "ais.preStop" -}}
{{- if gt (int .Values.preStopSleepSeconds) 0 -}}
lifecycle:
  preStop:
    sleep:
      seconds: {{ int .Values.preStopSleepSeconds }}
{{- end -}}
{{- end }}

{{/* Scheduling fields of one component's pod spec. */}}
{{- define "ais.scheduling" -}}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
