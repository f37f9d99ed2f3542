{{/* Name prefix of every object: the release name, with "-rig" appended unless it names rig already. */}}
{{- define "rig.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "rig.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "operator"). Immutable once installed. */}}
{{- define "rig.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* metadata.labels and annotations of a templated object: (dict "root" $ "component" "operator"). */}}
{{- define "rig.metadata" -}}
labels:
  {{- include "rig.labels" .root | nindent 2 }}
  {{- with .component }}
  app.kubernetes.io/component: {{ . }}
  {{- end }}
{{- with .root.Values.commonAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The image of one component: (dict "root" $ "name" "rig-operator" "values" .Values.operator). */}}
{{- define "rig.image" -}}
{{- $repository := .values.image.repository | default (printf "%s/%s" .root.Values.image.repository .name) -}}
{{- $tag := .values.image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}

{{/* Pod affinity: the user's, else replicas of the component preferably on different nodes. */}}
{{- define "rig.affinity" -}}
{{- if .values.affinity -}}
{{- toYaml .values.affinity -}}
{{- else -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "rig.selectorLabels" . | nindent 12 }}
{{- end -}}
{{- end -}}

{{/* The pod-level security context shared by both components (distroless nonroot user). */}}
{{- define "rig.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "rig.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* The namespace of the operator's leader-election Lease. */}}
{{- define "rig.leaseNamespace" -}}
{{- .Values.operator.leaseNamespace | default .Release.Namespace -}}
{{- end -}}

{{/* The operator's snapshot stream, as data planes reach it (RIG_OPERATOR_URL). */}}
{{- define "rig.operatorUrl" -}}
{{- printf "http://%s-operator.%s.svc:%d" (include "rig.fullname" .) .Release.Namespace (int .Values.operator.streamPort) -}}
{{- end -}}

{{/* RIG_PEERS: each data-plane pod by its stable StatefulSet DNS name under the headless Service. */}}
{{- define "rig.peers" -}}
{{- printf "*=http://{owner}.%s-peers.%s.svc:%d" (include "rig.fullname" .) .Release.Namespace (int .Values.dataplane.internalPort) -}}
{{- end -}}
