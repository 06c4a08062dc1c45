{{- define "fedkube.labels" -}}
app.kubernetes.io/name: fedkube
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- if .Values.site.name }}
fedkube.io/site: {{ .Values.site.name | quote }}
{{- end }}
{{- end -}}
