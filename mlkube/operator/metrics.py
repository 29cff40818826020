"""The operator's own Prometheus metrics (``/metrics`` on ``--metrics-port``).

The controllers already decide everything; this module only records what they decided, at
the places they decide it: how each reconcile ended and how long it took, which children
the API server refused, and the state each object's status now describes (rollout phase,
canary weight, the autoscaler's replica count, PyTorchJob states). One
:class:`OperatorMetrics` per operator process holds its own ``CollectorRegistry``, so two
operators in one process (tests, an embedding program) never share or clash on series.

The endpoint is served by aiohttp inside the operator's event loop, next to kopf's
liveness endpoint: it starts before kopf and stops after it, and a wedged loop stops
answering scrapes, which Prometheus' ``up`` then shows.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import kopf
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from mlkube.api.modelservice import ModelServiceStatus
from mlkube.api.pytorchjob import ConditionType, PyTorchJobStatus
from mlkube.api.rollout import RolloutPhase

#: Result labels of ``mlkube_operator_reconciles_total``.
SUCCESS = "success"
INVALID_SPEC = "invalid_spec"
APPLY_FAILED = "apply_failed"
DELETED = "deleted"
RETRY = "retry"
ERROR = "error"

#: A PyTorchJob's state is its first true condition in this order (the order the Argo CD
#: health check reads them), or Pending before the operator wrote any.
JOB_STATE_ORDER = (
    ConditionType.FAILED,
    ConditionType.SUCCEEDED,
    ConditionType.SUSPENDED,
    ConditionType.RESTARTING,
    ConditionType.RUNNING,
    ConditionType.CREATED,
)
JOB_STATES = (*(c.value for c in JOB_STATE_ORDER), "Pending")

#: Reconciles take milliseconds against a healthy API server and seconds when Prometheus
#: queries for canary analysis time out; the buckets cover both.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def job_state(status: PyTorchJobStatus) -> str:
    """Pure: the state a PyTorchJob is counted under."""
    for ctype in JOB_STATE_ORDER:
        if any(c.type is ctype and c.status == "True" for c in status.conditions):
            return ctype.value
    return "Pending"


@dataclass
class Outcome:
    """How one reconcile ended; the code under measurement sets ``result``."""

    result: str = SUCCESS


class OperatorMetrics:
    """Every metric of one operator process, in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.reconciles = Counter(
            "mlkube_operator_reconciles",
            "Reconciles by kind and result (success, invalid_spec, apply_failed, deleted, "
            "retry: a transient API error, retried with backoff, error: an unexpected exception).",
            ["kind", "result"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "mlkube_operator_reconcile_duration_seconds",
            "Wall time of one reconcile, from reading the object to writing its status.",
            ["kind"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.apply_failures = Counter(
            "mlkube_operator_apply_failures",
            "Child objects the API server refused to apply or delete, by child kind and "
            "HTTP status (5xx and 429 are retried, others make the ModelService Degraded).",
            ["kind", "code"],
            registry=self.registry,
        )
        self.rollout_phase = Gauge(
            "mlkube_operator_modelservice_rollout_phase",
            "1 for the rollout phase a ModelService's status records, 0 for the others.",
            ["namespace", "name", "phase"],
            registry=self.registry,
        )
        self.canary_weight = Gauge(
            "mlkube_operator_modelservice_canary_weight",
            "Percentage of traffic the canary gets (0 without a canary in flight).",
            ["namespace", "name"],
            registry=self.registry,
        )
        self.desired_replicas = Gauge(
            "mlkube_operator_modelservice_desired_replicas",
            "Replicas the autoscaler (or the HPA) wants for a ModelService, both tracks.",
            ["namespace", "name"],
            registry=self.registry,
        )
        self.pytorchjobs = Gauge(
            "mlkube_operator_pytorchjobs",
            "PyTorchJobs by state (their first true condition: Failed, Succeeded, "
            "Suspended, Restarting, Running, Created; Pending before any).",
            ["state"],
            registry=self.registry,
        )
        for state in JOB_STATES:
            self.pytorchjobs.labels(state=state).set(0)
        self._jobs: dict[tuple[str, str], str] = {}

    @contextmanager
    def reconcile(self, kind: str) -> Iterator[Outcome]:
        """Time a reconcile and count it under the result it set (or its exception's)."""
        outcome = Outcome()
        start = time.perf_counter()
        try:
            yield outcome
        except kopf.TemporaryError:
            outcome.result = RETRY
            raise
        except Exception:
            outcome.result = ERROR
            raise
        finally:
            self.duration.labels(kind=kind).observe(time.perf_counter() - start)
            self.reconciles.labels(kind=kind, result=outcome.result).inc()

    def apply_failed(self, kind: str, code: int) -> None:
        self.apply_failures.labels(kind=kind, code=str(code)).inc()

    def observe_modelservice(self, namespace: str, name: str, status: ModelServiceStatus) -> None:
        """Record what a ModelService's (new) status says about its rollout and scaling."""
        rollout = status.rollout
        if rollout is not None:
            for phase in RolloutPhase:
                self.rollout_phase.labels(namespace, name, phase.value).set(
                    1 if rollout.phase is phase else 0
                )
            in_flight = rollout.canary_revision is not None
            self.canary_weight.labels(namespace, name).set(
                rollout.canary_weight if in_flight else 0
            )
        scaling = status.autoscaling
        if scaling is not None and scaling.desired_replicas is not None:
            self.desired_replicas.labels(namespace, name).set(scaling.desired_replicas)
        else:
            _remove(self.desired_replicas, namespace, name)

    def forget_modelservice(self, namespace: str, name: str) -> None:
        """Drop a deleted ModelService's series (they would otherwise report it forever)."""
        for phase in RolloutPhase:
            _remove(self.rollout_phase, namespace, name, phase.value)
        _remove(self.canary_weight, namespace, name)
        _remove(self.desired_replicas, namespace, name)

    def observe_pytorchjob(self, namespace: str, name: str, status: PyTorchJobStatus) -> None:
        self._set_job(namespace, name, job_state(status))

    def forget_pytorchjob(self, namespace: str, name: str) -> None:
        self._set_job(namespace, name, None)

    def _set_job(self, namespace: str, name: str, state: str | None) -> None:
        key = (namespace, name)
        old = self._jobs.pop(key, None)
        if state is not None:
            self._jobs[key] = state
        if old == state:
            return
        if old is not None:
            self.pytorchjobs.labels(state=old).dec()
        if state is not None:
            self.pytorchjobs.labels(state=state).inc()

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


def _remove(gauge: Gauge, *labels: str) -> None:
    with suppress(KeyError):  # never recorded
        gauge.remove(*labels)


async def start_server(metrics: OperatorMetrics, host: str, port: int) -> web.AppRunner:
    """Serve ``GET /metrics`` on ``host:port`` in the running loop; ``cleanup()`` stops it.

    A port that cannot be bound raises here, before kopf starts: an operator that was asked
    for metrics and cannot serve them fails at once instead of running unobserved.
    """

    async def handle(_: web.Request) -> web.Response:
        response = web.Response(body=metrics.exposition())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
