"""The PyTorchJob controller: pure decisions, one thin kopf shell.

* :mod:`.env` — the environment torch.distributed and torchrun read, computed exactly as
  Kubeflow training-operator v1 computes it;
* :mod:`.pods` — pod and headless-service manifests (names, labels, ports, owner
  references, GPU tolerations);
* :mod:`.status` — what the pods say about the job: ``job_status(job, pods, now)``;
* :mod:`.gang` — gang scheduling: the PodGroup (scheduler-plugins or Volcano) and what
  marks a pod as its member;
* :mod:`.hpa` — the HorizontalPodAutoscaler of ``elasticPolicy.metrics``;
* :mod:`.planner` — the pods, services, PodGroup and HPA to create and delete, and whether
  the job itself is due for deletion: ``plan(job, pods, services, now, pod_group_apis)``;
* :mod:`.handlers` — kopf handlers that list, call the planner, apply, and write status.
"""
