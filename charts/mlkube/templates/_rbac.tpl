{{/*
Rules inside the watched namespaces. Arguments: peering (non-empty when on), namespaced
(bool), peeringName.
*/}}
{{- define "mlkube.watchedRules" -}}
# The custom resources: kopf watches them and keeps its state in mlkube.dev/ annotations
# and finalizers (metadata only); the operator never writes their spec.
- apiGroups: ["mlkube.dev"]
  resources: ["modelservices", "pytorchjobs"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["mlkube.dev"]
  resources: ["modelservices/status", "pytorchjobs/status"]
  verbs: ["get", "patch"]
# Children of a ModelService (server-side apply = patch; canary removal = delete).
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Pods: read for ModelService status; create/delete for PyTorchJob replicas.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Kubernetes Events for every transition.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if and .peering .namespaced }}
# kopf peering, per namespace: read all peering objects, write keep-alives into ours only.
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["list", "watch"]
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  resourceNames: [{{ .peeringName | quote }}]
  verbs: ["get", "patch"]
{{- end }}
{{- end }}
