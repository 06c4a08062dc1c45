{{- define "fedkube.labels" -}}
app.kubernetes.io/name: fedkube
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- if .Values.site.name }}
fedkube.io/site: {{ .Values.site.name | quote }}
{{- end }}
{{- end -}}

{{- /* A user or group id as the operator takes it: a number, or none for the platform's. */ -}}
{{- define "fedkube.id" -}}
{{- if kindIs "invalid" . }}none{{ else }}{{ . | int64 }}{{ end }}
{{- end -}}

{{- /* The engine image: by digest when one is given, else by tag (default: appVersion). */ -}}
{{- define "fedkube.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}
