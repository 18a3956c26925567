{{/*
Names and labels of every object, in one place. Templates that loop over the services pass
(dict "root" $ "component" "user") to the helpers that need a component.
*/}}

{{/* The services this chart runs, in the order their objects are rendered. */}}
{{- define "meshmart.components" -}}
user order payment gateway
{{- end }}

{{/* The services that own a database and so a migration Job. */}}
{{- define "meshmart.databaseComponents" -}}
user order payment
{{- end }}

{{- define "meshmart.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "<release>-<chart>", or the release name when it already names the chart; 63 characters at most. */}}
{{- define "meshmart.fullname" -}}
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

{{/* The name of one component's objects: "<fullname>-<component>". */}}
{{- define "meshmart.componentName" -}}
{{- printf "%s-%s" (include "meshmart.fullname" .root | trunc 50 | trimSuffix "-") .component }}
{{- end }}

{{/* The recommended labels (app.kubernetes.io/*) of one component's objects. */}}
{{- define "meshmart.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "meshmart.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Values.image.tag | default .root.Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: meshmart
{{- end }}

{{/* The labels that select one component's pods (stable across upgrades). */}}
{{- define "meshmart.selectorLabels" -}}
app.kubernetes.io/name: {{ include "meshmart.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The image of one component: registry/component then @digest or :tag. */}}
{{- define "meshmart.image" -}}
{{- $img := .root.Values.image }}
{{- $registry := required "image.registry is required: the registry and repository prefix your images were pushed to" $img.registry }}
{{- if $img.digest }}
{{- printf "%s/%s@%s" $registry .component $img.digest }}
{{- else }}
{{- printf "%s/%s:%s" $registry .component ($img.tag | default .root.Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* The Secret holding one component's keys. */}}
{{- define "meshmart.secretName" -}}
{{- $values := index .root.Values .component }}
{{- $values.existingSecret | default (include "meshmart.componentName" .) }}
{{- end }}

{{/* The Secret cert-manager writes one component's identity into. */}}
{{- define "meshmart.certificateSecretName" -}}
{{- printf "%s-tls" (include "meshmart.componentName" .) }}
{{- end }}

{{/* The Consul agent address, as an environment value (HOST_IP is set before it). */}}
{{- define "meshmart.consulAddr" -}}
{{- if .Values.consul.hostAgent }}
{{- printf "$(HOST_IP):%v" .Values.consul.hostAgentPort }}
{{- else }}
{{- required "consul.address is required: the host:port of your Consul cluster's HTTP API" .Values.consul.address }}
{{- end }}
{{- end }}

{{/* The consul:// gRPC target of a service. */}}
{{- define "meshmart.target" -}}
{{- printf "consul://%s/%s" (include "meshmart.consulAddr" .root) .component }}
{{- end }}

{{/* The directory every secret file is mounted at. */}}
{{- define "meshmart.secretDir" -}}
/etc/meshmart/secrets
{{- end }}

{{/*
The projected volume of one component's secret files: its identity (from its Secret or from
cert-manager's), its Consul token, its DSN (services with a database) and, for user only, the
token-signing key. Only the keys a component needs are projected, so nothing of another's lands in
its pod.
*/}}
{{- define "meshmart.secretVolume" -}}
{{- $keys := .root.Values.secretKeys }}
- name: secrets
  projected:
    defaultMode: 0440
    sources:
      {{- if eq .root.Values.tls.source "certManager" }}
      - secret:
          name: {{ include "meshmart.certificateSecretName" . }}
          items:
            - { key: tls.crt, path: cert.pem }
            - { key: tls.key, path: key.pem }
            - { key: ca.crt, path: ca.pem }
      {{- end }}
      - secret:
          name: {{ include "meshmart.secretName" . }}
          items:
            {{- if ne .root.Values.tls.source "certManager" }}
            - { key: {{ $keys.cert | quote }}, path: cert.pem }
            - { key: {{ $keys.key | quote }}, path: key.pem }
            - { key: {{ $keys.ca | quote }}, path: ca.pem }
            {{- end }}
            - { key: {{ $keys.consulToken | quote }}, path: consul.token }
            {{- if has .component (splitList " " (include "meshmart.databaseComponents" .root)) }}
            - { key: {{ $keys.databaseURL | quote }}, path: database-url }
            {{- end }}
            {{- if eq .component "user" }}
            - { key: {{ $keys.signingKey | quote }}, path: auth.key.pem }
            {{- end }}
{{- end }}

{{/* The environment every service shares. */}}
{{- define "meshmart.commonEnv" -}}
{{- $v := .root.Values }}
{{- $port := (index $v .component).grpcPort }}
{{- $dir := include "meshmart.secretDir" .root }}
- name: POD_IP
  valueFrom: { fieldRef: { fieldPath: status.podIP } }
{{- if $v.consul.hostAgent }}
- name: HOST_IP
  valueFrom: { fieldRef: { fieldPath: status.hostIP } }
{{- end }}
- { name: MESHMART_GRPC_ADDR, value: {{ printf ":%v" $port | quote }} }
- { name: MESHMART_ADVERTISE_ADDR, value: {{ printf "$(POD_IP):%v" $port | quote }} }
- { name: MESHMART_HTTP_ADDR, value: {{ printf ":%v" $v.ports.metrics | quote }} }
- { name: MESHMART_HEALTH_ADDR, value: {{ printf ":%v" $v.ports.health | quote }} }
- { name: CONSUL_HTTP_ADDR, value: {{ include "meshmart.consulAddr" .root | quote }} }
- { name: CONSUL_HTTP_TOKEN_FILE, value: {{ printf "%s/consul.token" $dir | quote }} }
- { name: MESHMART_CHECK_INTERVAL, value: {{ $v.consul.checkInterval | quote }} }
- { name: MESHMART_DEREGISTER_AFTER, value: {{ $v.consul.deregisterAfter | quote }} }
- { name: MESHMART_TLS_CERT, value: {{ printf "%s/cert.pem" $dir | quote }} }
- { name: MESHMART_TLS_KEY, value: {{ printf "%s/key.pem" $dir | quote }} }
- { name: MESHMART_TLS_CA, value: {{ printf "%s/ca.pem" $dir | quote }} }
- { name: MESHMART_DRAIN_DELAY, value: {{ printf "%vs" $v.lifecycle.drainDelaySeconds | quote }} }
- { name: MESHMART_SHUTDOWN_TIMEOUT, value: {{ printf "%vs" $v.lifecycle.shutdownTimeoutSeconds | quote }} }
- { name: MESHMART_LOG_LEVEL, value: {{ $v.logLevel | quote }} }
{{- if $v.tracing.otlpEndpoint }}
- { name: OTEL_EXPORTER_OTLP_ENDPOINT, value: {{ $v.tracing.otlpEndpoint | quote }} }
- { name: OTEL_EXPORTER_OTLP_INSECURE, value: {{ $v.tracing.insecure | toString | quote }} }
{{- end }}
{{- if ne .component "user" }}
{{- /* Every service but user verifies access tokens with the keys user publishes. */}}
- { name: MESHMART_AUTH_KEYS_TARGET, value: {{ include "meshmart.target" (dict "root" .root "component" "user") | quote }} }
{{- end }}
{{- end }}

{{/*
Names of environment variables that hold a secret when given a literal value; extraEnv refuses
them, since secrets are files here. tools/helmcheck's policy (secretEnv) uses the same pattern on
every rendered container.
*/}}
{{- define "meshmart.secretEnvPattern" -}}
(?i)^(DATABASE_URL|CONSUL_HTTP_TOKEN)$|PASSWORD|PASSWD|SECRET|TOKEN$|PRIVATE_KEY|API_KEY|DSN$
{{- end }}
