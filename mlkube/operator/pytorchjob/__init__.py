"""The PyTorchJob controller: pure decisions, one thin kopf shell.

* :mod:`.env` — the environment torch.distributed and torchrun read, computed exactly as
  Kubeflow training-operator v1 computes it;
* :mod:`.pods` — pod and headless-service manifests (names, labels, ports, owner
  references, GPU tolerations);
* :mod:`.status` — what the pods say about the job: ``job_status(job, pods, now)``;
* :mod:`.planner` — the pods and services to create and delete, and whether the job itself
  is due for deletion: ``plan(job, pods, services, now)``;
* :mod:`.handlers` — kopf handlers that list, call the planner, apply, and write status.
"""
