{{/*
Names and labels. Every helper takes the chart's context: `.` in this chart's templates, and
`index .Subcharts "tuned-proxy"` in an application chart that depends on this one (sidecar mode).
*/}}

{{- define "tuned-proxy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tuned-proxy.fullname" -}}
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

{{- define "tuned-proxy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tuned-proxy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tuned-proxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tuned-proxy.labels" -}}
helm.sh/chart: {{ include "tuned-proxy.chart" . }}
{{ include "tuned-proxy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "tuned-proxy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tuned-proxy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tuned-proxy.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The config.
*/}}

{{/* Used when the values give no config: a route on the built-in mock upstream. */}}
{{- define "tuned-proxy.demoConfig" -}}
# The chart's demo config: set `config` or `configYaml` to serve your own models.
client_keys_env: TUNED_PROXY_KEYS
policies_dir: policies
upstreams:
  mock: {kind: mock}
routes:
  demo:
    variants:
      - {name: base, upstream: mock, model: demo}
{{- end }}

{{/* The config file's text as the values give it (or the demo's). */}}
{{- define "tuned-proxy.givenConfigText" -}}
{{- if and .Values.configYaml .Values.config }}
{{- fail "set either config (a map) or configYaml (text), not both" }}
{{- end }}
{{- if .Values.configYaml }}
{{- .Values.configYaml }}
{{- else if .Values.config }}
{{- toYaml .Values.config }}
{{- else }}
{{- include "tuned-proxy.demoConfig" . }}
{{- end }}
{{- end }}

{{/* The config file's text, as the ConfigMap holds it: as given, and the tracing values as its
`tracing` section when they name an endpoint. */}}
{{- define "tuned-proxy.configText" -}}
{{- $given := include "tuned-proxy.givenConfigText" . }}
{{- $given }}
{{- if .Values.tracing.otlpEndpoint }}
{{- if hasKey ($given | fromYaml) "tracing" }}
{{- fail "tracing.otlpEndpoint is set and the config has a tracing section too: set tracing in one place" }}
{{- end }}
{{- $tracing := dict "otlp_endpoint" .Values.tracing.otlpEndpoint "sample" .Values.tracing.sample }}
{{- with .Values.tracing.serviceName }}
{{- $_ := set $tracing "service_name" . }}
{{- end }}
{{ dict "tracing" $tracing | toYaml }}
{{- end }}
{{- end }}

{{/* The config as YAML the templates can read back with fromYaml; fails on invalid YAML. */}}
{{- define "tuned-proxy.configParsed" -}}
{{- $config := include "tuned-proxy.configText" . | fromYaml }}
{{- if hasKey $config "Error" }}
{{- fail (printf "configYaml is not a YAML mapping: %s" $config.Error) }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/* Where the policy files go, relative to the config file (the config's policies_dir). */}}
{{- define "tuned-proxy.policiesDir" -}}
{{- $config := include "tuned-proxy.configParsed" . | fromYaml }}
{{- $dir := clean (toString (default "policies" $config.policies_dir)) }}
{{- if or (isAbs $dir) (eq $dir "..") (hasPrefix "../" $dir) }}
{{- fail (printf "config.policies_dir must stay inside the config's folder for the chart to mount policies there, got %q" $config.policies_dir) }}
{{- end }}
{{- $dir }}
{{- end }}

{{/* The environment variable that carries the client keys. */}}
{{- define "tuned-proxy.clientKeysEnv" -}}
{{- if .Values.existingConfigMap }}
{{- default "TUNED_PROXY_KEYS" .Values.clientKeys.envName }}
{{- else }}
{{- $config := include "tuned-proxy.configParsed" . | fromYaml }}
{{- if and .Values.clientKeys.envName (ne .Values.clientKeys.envName (toString $config.client_keys_env)) }}
{{- fail (printf "clientKeys.envName (%s) differs from the config's client_keys_env (%v): leave clientKeys.envName empty unless you use existingConfigMap" .Values.clientKeys.envName $config.client_keys_env) }}
{{- end }}
{{- $config.client_keys_env | default "" }}
{{- end }}
{{- end }}

{{- define "tuned-proxy.configMapName" -}}
{{- default (include "tuned-proxy.fullname" .) .Values.existingConfigMap }}
{{- end }}

{{/*
A policy file's text: text as given, a map as YAML. Tool files (.json) must be text: Helm sorts a
map's keys, and a model fine-tuned on tool definitions should see them in their training order.
*/}}
{{- define "tuned-proxy.policyText" -}}
{{- if kindIs "string" .content }}
{{- .content }}
{{- else if hasSuffix ".json" .name }}
{{- fail (printf "policies.%s: give a .json file as text (e.g. --set-file), not a map: Helm would reorder its keys" .name) }}
{{- else }}
{{- toYaml .content }}
{{- end }}
{{- end }}

{{/* The ConfigMap's data: the config file and the policy files. */}}
{{- define "tuned-proxy.configData" -}}
tuned-proxy.yaml: |
  {{- include "tuned-proxy.configText" . | trim | nindent 2 }}
{{- range $name, $content := .Values.policies }}
{{- if eq $name "tuned-proxy.yaml" }}
{{- fail "policies: tuned-proxy.yaml is the config file's name; give the config in config or configYaml" }}
{{- end }}
{{ $name | quote }}: |
  {{- include "tuned-proxy.policyText" (dict "name" $name "content" $content) | trim | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Pod template annotations: the config checksum, so that a config change rolls the pods. Absent
in reload mode (the proxy reloads in place) and with an existing ConfigMap (the chart cannot see
its content).
*/}}
{{- define "tuned-proxy.configChecksumAnnotation" -}}
{{- if not (or .Values.reload.enabled .Values.existingConfigMap) -}}
checksum/config: {{ include "tuned-proxy.configData" . | sha256sum }}
{{- end }}
{{- end }}

{{/*
The proxy container's pieces, shared by the Deployment and the sidecar.
*/}}

{{/* `serve` arguments; takes (dict "ctx" CONTEXT "host" HOST "port" PORT "drain" SECONDS "open" BOOL). */}}
{{- define "tuned-proxy.args" -}}
{{- $values := .ctx.Values -}}
- serve
- --config=/etc/tuned-proxy/tuned-proxy.yaml
- --host={{ .host }}
- --port={{ .port }}
- --drain-timeout={{ .drain }}
- --log-level={{ $values.logLevel }}
- --log-format={{ $values.logFormat }}
{{- with $values.metrics.port }}
- --metrics-host=0.0.0.0
- --metrics-port={{ . }}
{{- end }}
{{- if $values.reload.enabled }}
- --watch
{{- end }}
{{- if and .open $values.allowUnauthenticated }}
- --allow-unauthenticated
{{- end }}
{{- range $values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/* Upstream keys and extra variables (never the client keys: those only where the proxy listens openly). */}}
{{- define "tuned-proxy.upstreamEnv" -}}
{{- range .Values.upstreamKeys }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .key }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "tuned-proxy.volumeMounts" -}}
- name: tuned-proxy-config
  mountPath: /etc/tuned-proxy
  readOnly: true
- name: tuned-proxy-tmp
  mountPath: /tmp
{{- if .Values.capture.enabled }}
- name: tuned-proxy-capture
  mountPath: {{ .Values.capture.mountPath | quote }}
{{- end }}
{{- end }}

{{- define "tuned-proxy.volumes" -}}
- name: tuned-proxy-config
  configMap:
    name: {{ include "tuned-proxy.configMapName" . }}
    {{- if not .Values.existingConfigMap }}
    {{- $dir := include "tuned-proxy.policiesDir" . }}
    items:
      - key: tuned-proxy.yaml
        path: tuned-proxy.yaml
      {{- range $name, $content := .Values.policies }}
      - key: {{ $name | quote }}
        path: {{ ternary $name (printf "%s/%s" $dir $name) (eq $dir ".") | quote }}
      {{- end }}
    {{- end }}
- name: tuned-proxy-tmp
  emptyDir:
    sizeLimit: 64Mi
{{- with .Values.capture }}
{{- if .enabled }}
- name: tuned-proxy-capture
  {{- if eq .volume.type "persistentVolumeClaim" }}
  persistentVolumeClaim:
    claimName: {{ include "tuned-proxy.captureClaimName" $ }}
  {{- else if .volume.sizeLimit }}
  emptyDir:
    sizeLimit: {{ .volume.sizeLimit }}
  {{- else }}
  emptyDir: {}
  {{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Capture: the volume a route's `capture.dir` writes to.
*/}}

{{/* The claim the capture volume mounts: the one named, else the chart's own. */}}
{{- define "tuned-proxy.captureClaimName" -}}
{{- .Values.capture.volume.claimName | default (printf "%s-capture" (include "tuned-proxy.fullname" .)) }}
{{- end }}

{{/* Whether the chart creates the capture claim ("true" or ""). */}}
{{- define "tuned-proxy.captureCreatesClaim" -}}
{{- $capture := .Values.capture }}
{{- if and $capture.enabled (eq $capture.volume.type "persistentVolumeClaim") (not $capture.volume.claimName) }}true{{ end }}
{{- end }}

{{/* The routes of the chart's config that capture, comma-separated (none with existingConfigMap). */}}
{{- define "tuned-proxy.captureRoutes" -}}
{{- if not .Values.existingConfigMap }}
{{- $config := include "tuned-proxy.configParsed" . | fromYaml }}
{{- $routes := list }}
{{- range $name, $route := $config.routes | default dict }}
{{- if and (kindIs "map" $route) (kindIs "map" $route.capture) $route.capture }}
{{- $routes = append $routes $name }}
{{- end }}
{{- end }}
{{- join "," $routes }}
{{- end }}
{{- end }}

{{/*
"true" when the Deployment's pods may not all mount the capture claim: a claim without
ReadWriteMany is mounted on one node at a time, so a second replica, an autoscaled one or a
surging rollout's new pod scheduled on another node waits for it forever.
*/}}
{{- define "tuned-proxy.captureClaimTrap" -}}
{{- $capture := .Values.capture }}
{{- if and $capture.enabled (eq $capture.volume.type "persistentVolumeClaim") (not (has "ReadWriteMany" $capture.volume.accessModes)) }}
{{- $surge := toString (dig "rollingUpdate" "maxSurge" 1 (.Values.strategy | default dict)) }}
{{- $surges := and (ne (toString .Values.strategy.type) "Recreate") (not (has $surge (list "0" "0%"))) }}
{{- if or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled $surges }}true{{ end }}
{{- end }}
{{- end }}

{{/* Checks that span several values; run once from the ConfigMap template. */}}
{{- define "tuned-proxy.validate" -}}
{{- if and .Values.existingConfigMap (or .Values.config .Values.configYaml .Values.policies) }}
{{- fail "existingConfigMap replaces config, configYaml and policies: leave them empty" }}
{{- end }}
{{- if and .Values.existingConfigMap .Values.tracing.otlpEndpoint }}
{{- fail "tracing.otlpEndpoint goes into the chart's ConfigMap: with existingConfigMap, set tracing in its config" }}
{{- end }}
{{- if and (eq .Values.mode "deployment") (not .Values.allowUnauthenticated) (not (include "tuned-proxy.clientKeysEnv" .)) }}
{{- fail "the config sets no client_keys_env: in deployment mode the proxy listens on 0.0.0.0 and refuses to start without client keys. Set client_keys_env in the config (and clientKeys.secretName), or allowUnauthenticated=true behind something that authenticates" }}
{{- end }}
{{- include "tuned-proxy.validateCapture" . }}
{{- $minimum := add .Values.drainTimeoutSeconds .Values.preStopSleepSeconds }}
{{- if and (not (kindIs "invalid" .Values.terminationGracePeriodSeconds)) (le (int .Values.terminationGracePeriodSeconds) (int $minimum)) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed drainTimeoutSeconds + preStopSleepSeconds (%v), or in-flight requests are killed" .Values.terminationGracePeriodSeconds $minimum) }}
{{- end }}
{{- end }}

{{/* A capturing route needs the capture volume, mounted where it writes. */}}
{{- define "tuned-proxy.validateCapture" -}}
{{- $capture := .Values.capture }}
{{- $mount := clean $capture.mountPath }}
{{- range list "/" "/etc/tuned-proxy" "/tmp" }}
{{- if or (eq $mount .) (and (ne . "/") (hasPrefix (printf "%s/" .) $mount)) }}
{{- fail (printf "capture.mountPath (%s) must not be / or in /etc/tuned-proxy or /tmp, which the chart mounts for itself" $capture.mountPath) }}
{{- end }}
{{- end }}
{{- if not .Values.existingConfigMap }}
{{- $config := include "tuned-proxy.configParsed" . | fromYaml }}
{{- range $name, $route := $config.routes | default dict }}
{{- if and (kindIs "map" $route) (kindIs "map" $route.capture) $route.capture }}
{{- $dir := toString (dig "dir" "" $route.capture) }}
{{- if not $capture.enabled }}
{{- fail (printf "routes.%s.capture writes to %s, but the container's root filesystem is read-only: set capture.enabled so the chart mounts a writable volume at capture.mountPath, and capture.dir to it" $name ($dir | default "its dir")) }}
{{- else if ne (clean $dir) $mount }}
{{- fail (printf "routes.%s.capture.dir (%s) must be capture.mountPath (%s), where the chart mounts the capture volume" $name $dir $capture.mountPath) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
