{{/* Chart name, truncated to 63 characters (a DNS label). */}}
{{- define "podrunner.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: <release>-podrunner, or the release name when it already
contains the chart name. */}}
{{- define "podrunner.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "podrunner.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "podrunner.selectorLabels" -}}
app.kubernetes.io/name: {{ include "podrunner.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "podrunner.labels" -}}
{{ include "podrunner.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: runner-manager
helm.sh/chart: {{ include "podrunner.chart" . }}
{{- end -}}

{{/* The manager image: a string, or the gitlab chart's map
{registry, image, tag}. */}}
{{- define "podrunner.image" -}}
{{- $img := .Values.image -}}
{{- if kindIs "string" $img -}}
{{- required "image must not be empty" $img -}}
{{- else -}}
{{- $repo := required "image.image must be set" $img.image -}}
{{- $tag := default .Chart.AppVersion (toString (default "" $img.tag)) -}}
{{- if $img.registry -}}
{{- printf "%s/%s:%s" $img.registry $repo (tpl $tag .) -}}
{{- else -}}
{{- printf "%s:%s" $repo (tpl $tag .) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The namespace of the job pods. */}}
{{- define "podrunner.jobNamespace" -}}
{{- default .Release.Namespace (default .Values.runners.namespace .Values.runners.jobNamespace) -}}
{{- end -}}

{{/* Whether the chart creates the ServiceAccount: serviceAccount.create,
or when unset, rbac.create (as the gitlab chart does). */}}
{{- define "podrunner.createServiceAccount" -}}
{{- if kindIs "bool" .Values.serviceAccount.create -}}
{{- if .Values.serviceAccount.create }}true{{ end -}}
{{- else if .Values.rbac.create -}}
true
{{- end -}}
{{- end -}}

{{- define "podrunner.serviceAccountName" -}}
{{- if .Values.serviceAccount.name -}}
{{- .Values.serviceAccount.name -}}
{{- else if .Values.rbac.serviceAccountName -}}
{{- .Values.rbac.serviceAccountName -}}
{{- else if include "podrunner.createServiceAccount" . -}}
{{- include "podrunner.fullname" . -}}
{{- else -}}
default
{{- end -}}
{{- end -}}

{{/* The Secret holding the tokens. */}}
{{- define "podrunner.secretName" -}}
{{- default (include "podrunner.fullname" .) .Values.runners.secret -}}
{{- end -}}

{{/* The rendered runners.config template. */}}
{{- define "podrunner.runnerTemplate" -}}
{{- if .Values.runners.config -}}
{{- tpl .Values.runners.config . -}}
{{- end -}}
{{- end -}}

{{/* "true" when the rendered runners.config sets key (a TOML key at the
start of a line): the chart's flat value then yields to the template, as
the gitlab chart does for namespace. */}}
{{- define "podrunner.templateSets" -}}
{{- $tpl := include "podrunner.runnerTemplate" .root -}}
{{- if regexMatch (printf "(?m)^\\s*%s\\s*=" .key) $tpl }}true{{ end -}}
{{- end -}}

{{/* Where config.toml lives (a Memory emptyDir). */}}
{{- define "podrunner.configDir" -}}
/home/podrunner/.gitlab-runner
{{- end -}}

{{/* The names of imagePullSecrets ([{name: x}, ...]), comma-separated. */}}
{{- define "podrunner.pullSecretNames" -}}
{{- range $i, $s := .Values.imagePullSecrets -}}
{{- if $i }},{{ end -}}
{{- required "imagePullSecrets: each entry needs a name, e.g. [{name: regcred}]" $s.name -}}
{{- end -}}
{{- end -}}
