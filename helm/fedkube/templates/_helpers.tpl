{{- /* The chart's name (nameOverride): the app.kubernetes.io/name of its objects. */ -}}
{{- define "fedkube.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- /* The prefix of every object's name: fullnameOverride, else the release's name, with
       the chart's name after it unless the release's name holds it already (no stutter:
       release "fedkube" gives fedkube-operator). */ -}}
{{- define "fedkube.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "fedkube.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- /* The operator's ServiceAccount: serviceAccount.name, else <fullname>-operator. */ -}}
{{- define "fedkube.serviceAccountName" -}}
{{- default (printf "%s-operator" (include "fedkube.fullname" .)) .Values.serviceAccount.name -}}
{{- end -}}

{{- /* What the operator's Deployment selects its pod by (immutable: an upgrade must not
       change it), and its Service with the component. */ -}}
{{- define "fedkube.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fedkube.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "fedkube.labels" -}}
app.kubernetes.io/name: {{ include "fedkube.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fedkube
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | quote }}
{{- if .Values.site.name }}
fedkube.io/site: {{ .Values.site.name | quote }}
{{- end }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- /* A user or group id as the operator takes it: a number, or none for the platform's. */ -}}
{{- define "fedkube.id" -}}
{{- if kindIs "invalid" . }}none{{ else }}{{ . | int64 }}{{ end }}
{{- end -}}

{{- /* An image by digest when one is given, else by tag (default: appVersion, then the
       variant's suffix for the engine: 0.1.0-cu132). The registry is global.imageRegistry (a
       mirror for every image of the chart) when set, else the image's own; none for neither.
       Called with (list .Values.image .Chart.AppVersion .Values.global). */ -}}
{{- define "fedkube.imageRef" -}}
{{- $image := index . 0 -}}
{{- $global := index . 2 | default dict -}}
{{- $registry := $global.imageRegistry | default $image.registry -}}
{{- $name := ternary (printf "%s/%s" $registry $image.repository) $image.repository (ne "" ($registry | default "")) -}}
{{- if $image.digest -}}
{{ $name }}@{{ $image.digest }}
{{- else -}}
{{- $tag := index . 1 -}}
{{- if $image.variant }}{{ $tag = printf "%s-%s" $tag $image.variant }}{{ end -}}
{{ $name }}:{{ $image.tag | default $tag }}
{{- end -}}
{{- end -}}

{{- /* The engine image, which job pods run. */ -}}
{{- define "fedkube.image" -}}
{{ include "fedkube.imageRef" (list .Values.image .Chart.AppVersion .Values.global) }}
{{- end -}}

{{- /* The operator's image (no torch). */ -}}
{{- define "fedkube.operatorImage" -}}
{{ include "fedkube.imageRef" (list .Values.operator.image .Chart.AppVersion .Values.global) }}
{{- end -}}

{{- /* The operator pod's security context: the restricted Pod Security Standard. */ -}}
{{- define "fedkube.podSecurityContext" -}}
runAsNonRoot: true
seccompProfile: {type: RuntimeDefault}
{{- with .Values.podSecurity }}
{{- if not (kindIs "invalid" .runAsUser) }}
runAsUser: {{ .runAsUser | int64 }}
{{- end }}
{{- if not (kindIs "invalid" .runAsGroup) }}
runAsGroup: {{ .runAsGroup | int64 }}
{{- end }}
{{- if not (kindIs "invalid" .fsGroup) }}
fsGroup: {{ .fsGroup | int64 }}
{{- end }}
{{- end }}
{{- end -}}

{{- /* A container's hardening: read-only root, no privilege, no capability. */ -}}
{{- define "fedkube.containerSecurityContext" -}}
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities: {drop: ["ALL"]}
{{- end -}}

{{- /* The namespaces a PodMonitor or ServiceMonitor scrapes: every one, or the watched ones
       and the release's own, where the operator runs. */ -}}
{{- define "fedkube.monitoredNamespaces" -}}
{{- if .Values.operator.watchNamespaces -}}
matchNames: {{- toYaml (append .Values.operator.watchNamespaces .Release.Namespace | uniq) | nindent 2 }}
{{- else -}}
any: true
{{- end -}}
{{- end -}}

{{- /* The app.kubernetes.io/name values to scrape: the job pods' (always fedkube) and the
       operator's (nameOverride). */ -}}
{{- define "fedkube.monitoredNames" -}}
{{- list "fedkube" (include "fedkube.name" .) | uniq | toJson -}}
{{- end -}}
