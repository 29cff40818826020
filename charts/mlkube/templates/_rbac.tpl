{{/*
Rules inside the watched namespaces. Arguments: peering (non-empty when on), namespaced
(bool), peeringName.
*/}}
{{- define "mlkube.watchedRules" -}}
# The custom resources: kopf lists and watches them (the controllers read them from that
# cache) and patches away the finalizer an older mlkube put on them. The operator never
# writes their spec, and keeps no state of its own on them.
- apiGroups: ["mlkube.dev"]
  resources: ["modelservices", "pytorchjobs"]
  verbs: ["list", "watch", "patch"]
# A finished PyTorchJob is deleted ttlSecondsAfterFinished after completion (Kubeflow's TTL).
- apiGroups: ["mlkube.dev"]
  resources: ["pytorchjobs"]
  verbs: ["delete"]
- apiGroups: ["mlkube.dev"]
  resources: ["modelservices/status", "pytorchjobs/status"]
  verbs: ["patch"]
# ModelService children: server-side apply (patch, and create: the API server authorizes
# an apply that creates the object as both), listed once at start and then watched (the reconcile reads
# them from that cache, and their changes refresh the status or undo drift), and
# owner-checked deletes (the canary Deployment after promotion or rollback, the PDB below
# two replicas, the HPA when autoscaling leaves hpa).
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "create", "patch", "delete"]
# Exact canary weights through a Gateway API HTTPRoute (trafficRouting: gatewayAPI).
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["create", "patch"]
# Services: ModelService's (applied) and the PyTorchJob replicas' headless ones (created,
# deleted by cleanPodPolicy), listed once at start and then watched.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# Pods: watched for ModelService status; created, watched and deleted for PyTorchJob
# replicas.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "create", "delete"]
# The S3 Secret a ModelService names (spec.model.storage.secretName): read by name before
# each apply, so that a missing one is a condition on the ModelService rather than a pod
# stuck in CreateContainerConfigError. Never listed or watched: no Secret is cached.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
# A PyTorchJob's optional children, not watched: the HPA of elasticPolicy.metrics (above)
# and the gang schedulers' PodGroups (scheduler-plugins, Volcano), server-side applied,
# read before an owner-checked delete when the job finishes or no longer asks for one.
- apiGroups: ["scheduling.x-k8s.io", "scheduling.volcano.sh"]
  resources: ["podgroups"]
  verbs: ["get", "create", "patch", "delete"]
# Kubernetes Events for every transition.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- if and .peering .namespaced }}
# kopf peering, per namespace: read all peering objects, write keep-alives into ours only.
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["list", "watch"]
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  resourceNames: [{{ .peeringName | quote }}]
  verbs: ["patch"]
{{- end }}
{{- end }}
