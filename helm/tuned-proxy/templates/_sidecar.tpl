{{/*
Sidecar mode: the proxy inside an application's own Pod, listening on 127.0.0.1 with no client
keys (only the Pod's own containers can reach it), so the application needs no key of its own.

In an application chart that lists this chart as a dependency, with `mode: sidecar` in its values
(under the `tuned-proxy` key), pass the dependency's context, `index .Subcharts "tuned-proxy"`:

  template:
    metadata:
      annotations:
        {{- include "tuned-proxy.sidecar.podAnnotations" (index .Subcharts "tuned-proxy") | nindent 8 }}
    spec:
      initContainers:            # `containers:` instead when sidecar.native is false
        {{- include "tuned-proxy.sidecar.container" (index .Subcharts "tuned-proxy") | nindent 8 }}
      containers:
        - name: app              # calls http://127.0.0.1:8080/v1
      volumes:
        {{- include "tuned-proxy.volumes" (index .Subcharts "tuned-proxy") | nindent 8 }}

The dependency renders the ConfigMap (and, with capture on a claim it creates, the claim).
tuned-proxy.volumes carries the capture volume when capture.enabled, and the container mounts it
at capture.mountPath; on a claim, give the Pod `securityContext.fsGroup: 10001` so the proxy can
write there. examples/sidecar-app is such a chart; examples/sidecar.yaml is the same Pod as plain
manifests.
*/}}

{{/* The proxy container, as one item of a containers or initContainers list. */}}
{{- define "tuned-proxy.sidecar.container" -}}
{{- $port := .Values.sidecar.port -}}
- name: tuned-proxy
  image: {{ include "tuned-proxy.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  {{- if .Values.sidecar.native }}
  # A native sidecar: started before the application's containers, stopped after them.
  restartPolicy: Always
  {{- end }}
  args:
    {{- include "tuned-proxy.args" (dict "ctx" . "host" "127.0.0.1" "port" $port "drain" .Values.sidecar.drainTimeoutSeconds "open" false) | nindent 4 }}
  ports:
    - name: tuned-proxy
      containerPort: {{ $port }}
      protocol: TCP
    {{- with .Values.metrics.port }}
    - name: tp-metrics
      containerPort: {{ . }}
      protocol: TCP
    {{- end }}
  {{- with include "tuned-proxy.upstreamEnv" . | trim }}
  env:
    {{- . | nindent 4 }}
  {{- end }}
  {{- with .Values.envFrom }}
  envFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if .Values.sidecar.native }}
  # The application starts only once the proxy answers.
  startupProbe:
    httpGet:
      path: /healthz
      port: {{ $port }}
    periodSeconds: 1
    failureThreshold: 30
  {{- end }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: {{ $port }}
    periodSeconds: 10
    timeoutSeconds: 3
    failureThreshold: 3
  resources:
    {{- toYaml .Values.sidecar.resources | nindent 4 }}
  # Non-root whatever the application's Pod runs as (the image's user is 10001).
  {{- $runAs := dict "runAsNonRoot" true "runAsUser" 10001 "runAsGroup" 10001 }}
  securityContext:
    {{- merge (deepCopy .Values.securityContext) $runAs | toYaml | nindent 4 }}
  volumeMounts:
    {{- include "tuned-proxy.volumeMounts" . | nindent 4 }}
{{- end }}

{{/* Pod template annotations for the application's Pod (the config checksum, outside reload mode). */}}
{{- define "tuned-proxy.sidecar.podAnnotations" -}}
{{- include "tuned-proxy.configChecksumAnnotation" . }}
{{- end }}
