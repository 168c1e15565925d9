{{/*
Named templates shared by the chart's manifests. One naming helper (fullname, truncated
to 63 characters because names end up in DNS labels and label values) and one labels
helper, so every object is findable with the same selectors.
*/}}

{{- define "promptcache.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The resource-name prefix: <release>-<chart>, or the release alone when it already contains the chart name. */}}
{{- define "promptcache.fullname" -}}
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

{{/* A component-scoped name: <fullname>-<suffix>, still at most 63 characters. */}}
{{- define "promptcache.componentName" -}}
{{- $full := include "promptcache.fullname" .ctx -}}
{{- printf "%s-%s" ($full | trunc (int (sub 62 (len .suffix)))) .suffix | trimSuffix "-" -}}
{{- end -}}

{{- define "promptcache.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Labels of every object. Call with (dict "ctx" $ "component" "operator"); component may
be empty for chart-wide objects.
*/}}
{{- define "promptcache.labels" -}}
helm.sh/chart: {{ include "promptcache.chart" .ctx }}
{{ include "promptcache.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: promptcache
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The immutable subset of the labels, for selectors. Same arguments as labels. */}}
{{- define "promptcache.selectorLabels" -}}
app.kubernetes.io/name: {{ include "promptcache.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{/* image reference: repository[:tag][@digest] */}}
{{- define "promptcache.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
The sidecar image: injector.image, falling back to image piece by piece. A digest pins
it: injector.image.digest, or image.digest when the repository is not overridden (a
digest of one repository means nothing in another).
*/}}
{{- define "promptcache.sidecarImage" -}}
{{- $repo := default .Values.image.repository .Values.injector.image.repository -}}
{{- if .Values.injector.image.digest -}}
{{- printf "%s@%s" $repo .Values.injector.image.digest -}}
{{- else if .Values.injector.image.tag -}}
{{- printf "%s:%s" $repo .Values.injector.image.tag -}}
{{- else if and .Values.image.digest (not .Values.injector.image.repository) -}}
{{- printf "%s@%s" $repo .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "promptcache.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "promptcache.fullname" .) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "promptcache.webhookServiceName" -}}
{{- include "promptcache.componentName" (dict "ctx" . "suffix" "webhook") -}}
{{- end -}}

{{- define "promptcache.webhookSecretName" -}}
{{- include "promptcache.componentName" (dict "ctx" . "suffix" "webhook-tls") -}}
{{- end -}}

{{- define "promptcache.injectorConfigMapName" -}}
{{- include "promptcache.componentName" (dict "ctx" . "suffix" "injector") -}}
{{- end -}}

{{- define "promptcache.peeringName" -}}
{{- default (include "promptcache.fullname" .) .Values.operator.peering.name -}}
{{- end -}}

{{/*
Namespaces the webhook never sees: kube-system, the release namespace (the operator's
own pods) and injector.excludeNamespaces, de-duplicated and sorted so the rendered
manifest is stable.
*/}}
{{- define "promptcache.excludedNamespaces" -}}
{{- $all := concat (list "kube-system" .Release.Namespace) .Values.injector.excludeNamespaces -}}
{{- toJson (uniq $all | sortAlpha) -}}
{{- end -}}

{{/*
The webhook's TLS material, computed once per render and shared by the Secret and the
MutatingWebhookConfiguration (both must agree on the CA). An existing Secret is reused
(`lookup`) as long as its certificate names the Service as it is now and stays valid
for more than certificates.renewBeforeDays (its Secret annotations record both), so
`helm upgrade` keeps the CA the API server already trusts. Otherwise a new CA and
certificate are generated, and the caBundle carries the new CA *and* the previous one:
the API server trusts both while the operator pods still serve the old certificate
(until the kubelet refreshes the mounted Secret and kopf re-reads it).
`helm template` has no cluster to look into and generates fresh material on every run.
Returns JSON: {"ca", "cert", "key", "bundle", "sans", "notAfter"} (PEM unencoded).
*/}}
{{- define "promptcache.webhookTLS" -}}
{{- $cache := .Values._promptcacheTLS | default dict -}}
{{- if not $cache.ca -}}
{{- $svc := include "promptcache.webhookServiceName" . -}}
{{- $ns := .Release.Namespace -}}
{{- $sansList := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) -}}
{{- $sans := join "," $sansList -}}
{{- $now := now | unixEpoch | int64 -}}
{{- $renewBefore := mul (int .Values.certificates.renewBeforeDays) 86400 -}}
{{- $secret := lookup "v1" "Secret" $ns (include "promptcache.webhookSecretName" .) -}}
{{- $data := dig "data" dict $secret -}}
{{- $ann := dig "metadata" "annotations" dict $secret -}}
{{- $notAfter := index $ann "promptcache.io/not-after" | default "0" | int64 -}}
{{- $reuse := and (index $data "ca.crt") (index $data "tls.crt") (index $data "tls.key") (eq (index $ann "promptcache.io/sans" | default "") $sans) (gt (sub $notAfter $now) $renewBefore) -}}
{{- if $reuse -}}
{{- $ca := index $data "ca.crt" | b64dec -}}
{{- $previous := index $data "previous-ca.crt" | default "" | b64dec -}}
{{- $cache = dict "ca" $ca "cert" (index $data "tls.crt" | b64dec) "key" (index $data "tls.key" | b64dec) "previous" $previous "sans" $sans "notAfter" (toString $notAfter) -}}
{{- else -}}
{{- $days := int .Values.certificates.validityDays -}}
{{- $ca := genCA (printf "%s-ca" (include "promptcache.fullname" .)) $days -}}
{{- $cert := genSignedCert (printf "%s.%s.svc" $svc $ns) nil $sansList $days $ca -}}
{{- $previous := index $data "ca.crt" | default "" | b64dec -}}
{{- $cache = dict "ca" $ca.Cert "cert" $cert.Cert "key" $cert.Key "previous" $previous "sans" $sans "notAfter" (toString (add $now (mul $days 86400))) -}}
{{- end -}}
{{- $_ := set $cache "bundle" (printf "%s%s" $cache.ca $cache.previous) -}}
{{- $_ := set .Values "_promptcacheTLS" $cache -}}
{{- end -}}
{{- toJson $cache -}}
{{- end -}}

{{/*
Impossible value combinations fail the render with a message that says what to change.
Included once, from the operator Deployment.
*/}}
{{- define "promptcache.validate" -}}
{{- $op := .Values.operator -}}
{{- if and (not $op.peering.enabled) (gt (int $op.replicaCount) 1) -}}
{{- fail (printf "operator.replicaCount=%d needs operator.peering.enabled=true: standalone operators would all run the handlers at once" (int $op.replicaCount)) -}}
{{- end -}}
{{- if and $op.podDisruptionBudget.enabled (ge (int $op.podDisruptionBudget.minAvailable) (int $op.replicaCount)) -}}
{{- fail (printf "operator.podDisruptionBudget.minAvailable=%d must be below operator.replicaCount=%d, or no node could ever be drained; raise replicaCount or disable the PodDisruptionBudget" (int $op.podDisruptionBudget.minAvailable) (int $op.replicaCount)) -}}
{{- end -}}
{{- if eq (int .Values.injector.listenPort) (int .Values.injector.adminPort) -}}
{{- fail "injector.listenPort and injector.adminPort must differ" -}}
{{- end -}}
{{- if eq (int $op.healthPort) (int .Values.webhook.port) -}}
{{- fail "operator.healthPort and webhook.port must differ" -}}
{{- end -}}
{{- if or (eq (int $op.metricsPort) (int .Values.webhook.port)) (eq (int $op.metricsPort) (int $op.healthPort)) -}}
{{- fail "operator.metricsPort must differ from webhook.port and operator.healthPort" -}}
{{- end -}}
{{- if and .Values.certificates.certManager.enabled .Values.certificates.certManager.issuerRef.name (not .Values.certificates.certManager.issuerRef.kind) -}}
{{- fail "certificates.certManager.issuerRef.kind is required with issuerRef.name" -}}
{{- end -}}
{{- if and (not .Values.rbac.create) (not $op.serviceAccount.create) (not $op.serviceAccount.name) -}}
{{- fail "operator.serviceAccount.name is required when operator.serviceAccount.create is false" -}}
{{- end -}}
{{- end -}}
