"""Assembling and running the kopf operator: settings, login, watches, the work queue.

kopf is run programmatically (``kopf.operator``) with an explicit registry and settings, so
nothing depends on import side effects or on kopf's CLI, and tests start the very same
operator in-process against an API mock.

Both controllers have one shape. kopf is used for what it is good at (login, watching,
peering, liveness) through its public API only: ``kopf.on.event`` handlers put what the
watch streams deliver into the :class:`~mlkube.operator.cache.ObjectCache` and the key of
the object that has to look again into the :class:`~mlkube.operator.workqueue.WorkQueue`;
the queue's workers run each controller's level-based reconcile, which reads from the
cache and writes through the one :class:`~mlkube.operator.kube.KubeAPI`. No kopf change
handler, timer or daemon is registered, so kopf never puts a finalizer or its own
annotations on our objects (it removes a finalizer an older mlkube put there).

Each controller lives in a module with ``register(registry, ctx) -> None`` (listed in
``HANDLER_MODULES``): it registers the watch of its own kind, its reconcile
(``ctx.reconcilers``) and which children's events concern it (:meth:`route_children`).
``ctx`` (an :class:`OperatorContext`) carries the configuration, the client, the cache
and the queue; handlers close over it (kopf's ``memo`` is copied per object).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from mlkube.operator import kube, peering
from mlkube.operator.builders import LABEL_MANAGED_BY, BuildSettings
from mlkube.operator.cache import AppliedMemory, ObjectCache, UnwatchedChildren
from mlkube.operator.config import OperatorConfig
from mlkube.operator.kube import KubeAPI
from mlkube.operator.metrics import OperatorMetrics, start_server
from mlkube.operator.workqueue import Key, WorkQueue

HANDLER_MODULES = (
    "mlkube.operator.handlers",
    "mlkube.operator.pytorchjob.handlers",
)
STATE_PREFIX = "mlkube.dev"
FINALIZER = "mlkube.dev/finalizer"

logger = logging.getLogger("mlkube.operator")

JsonDict = dict[str, Any]
ChildRoute = Callable[[str | None, str, JsonDict], None]
"""``route(event_type, kind, body)``: a controller's reaction to a child's watch event."""
ControllerReconcile = Callable[[str, str, bool], Awaitable[float | None]]
"""``reconcile(namespace, name, full)`` → seconds until the next full pass, or None."""

#: Children both controllers may own, watched once (label ``managed-by=mlkube``) and
#: cached: kind -> (group, version, plural).
CHILD_RESOURCES = {
    "Deployment": ("apps", "v1", "deployments"),
    "Service": ("", "v1", "services"),
    "PodDisruptionBudget": ("policy", "v1", "poddisruptionbudgets"),
    "Pod": ("", "v1", "pods"),
}
MANAGED_BY = "mlkube"


@dataclass
class OperatorContext:
    """Shared state of one operator process."""

    config: OperatorConfig
    connection: kopf.ConnectionInfo | None = None
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    cache: ObjectCache = field(default_factory=ObjectCache)
    applied: AppliedMemory = field(default_factory=AppliedMemory)
    unwatched: UnwatchedChildren = field(default_factory=UnwatchedChildren)
    served: dict[str, tuple[bool, float]] = field(default_factory=dict)
    """API discovery answers: RESOURCES key -> (served, monotonic time of the answer)."""
    reconcilers: dict[str, ControllerReconcile] = field(default_factory=dict)
    routes: dict[str, list[ChildRoute]] = field(default_factory=dict)
    standby: peering.Standby | None = None
    queue: WorkQueue = field(init=False)
    _api: KubeAPI | None = None
    _login_settings: kopf.OperatorSettings | None = None
    _locks: dict[tuple[str, str, str], asyncio.Lock] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.queue = WorkQueue(self._reconcile, workers=self.config.workers, gate=self._active)

    async def _reconcile(self, key: Key, full: bool) -> float | None:
        kind, namespace, name = key
        return await self.reconcilers[kind](namespace, name, full)

    def _active(self) -> bool:
        return self.standby is None or not self.standby.standing_by()

    def route_children(self, kind: str, label: str, route: ChildRoute) -> None:
        """Send watch events of ``kind`` children to ``route`` (and index them by ``label``)."""
        self.routes.setdefault(kind, []).append(route)
        labels = self.cache.owner_labels.get(kind, ())
        if label not in labels:
            self.cache.owner_labels[kind] = (*labels, label)

    @property
    def build(self) -> BuildSettings:
        return BuildSettings(
            default_image=self.config.default_image,
            image_pull_policy=self.config.image_pull_policy,
        )

    @property
    def api(self) -> KubeAPI:
        """The API client, created on first use after kopf's login.

        It reads ``connection`` on every request, so credentials from kopf's re-login
        (through our login handler) are used at once; on a 401 of its own it logs in
        again through :meth:`relogin`.
        """
        if self._api is None:
            if self.connection is None:
                raise kopf.TemporaryError("not logged in to the API server yet", delay=1)
            self._api = KubeAPI(
                self.current_connection, timeout=self.config.request_timeout, relogin=self.relogin
            )
        return self._api

    def current_connection(self) -> kopf.ConnectionInfo:
        if self.connection is None:
            raise kopf.TemporaryError("not logged in to the API server yet", delay=1)
        return self.connection

    def logged_in(self, info: kopf.ConnectionInfo | None, settings: kopf.OperatorSettings) -> None:
        """Record a login's result (kopf's or our own re-login) and the settings it used."""
        self._login_settings = settings
        if info is not None:
            self.connection = info

    async def relogin(self) -> kopf.ConnectionInfo | None:
        """Log in again as kopf would (the same functions, re-reading the token files)."""
        settings = self._login_settings or kopf.OperatorSettings()
        info = await asyncio.to_thread(kube.login, settings=settings)
        self.logged_in(info, settings)
        return info

    def lock(self, kind: str, namespace: str, name: str) -> asyncio.Lock:
        """One lock per object: a full pass and a status refresh of the same object never
        run concurrently."""
        return self._locks.setdefault((kind, namespace, name), asyncio.Lock())

    async def close(self) -> None:
        await self.queue.stop()
        if self._api is not None:
            await self._api.close()
            self._api = None


def configure_settings(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    """kopf settings that every mlkube deployment needs."""
    # kopf's own bookkeeping lives under our prefix, never kopf.zalando.org/.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=STATE_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=STATE_PREFIX, key="last-handled-configuration"
    )
    # No handler needs a finalizer (children are garbage-collected through owner
    # references, and only watching handlers are registered). kopf still has to know the
    # name: it removes a finalizer it no longer needs, so objects that an older mlkube
    # marked with this one are released by the current operator.
    settings.persistence.finalizer = FINALIZER
    # Watches that end on the server's schedule and a client-side limit just beyond it:
    # a connection that silently stops delivering events is dropped and re-listed instead
    # of leaving the operator deaf (kopf's known stall when no timeouts are set).
    settings.watching.server_timeout = config.watch_server_timeout
    settings.watching.client_timeout = config.watch_client_timeout
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = config.request_timeout
    settings.networking.connect_timeout = 30
    # Events: ours are explicit (one per transition); kopf's own log lines become Events
    # only for warnings and errors, so `kubectl describe` is not flooded.
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "mlkube-operator"
    settings.posting.reporting_instance = socket.gethostname()
    settings.posting.event_name_prefix = "mlkube-"
    # Peering: standalone unless a peering name is configured.
    settings.peering.standalone = config.standalone
    settings.peering.name = config.peering or "mlkube"
    settings.peering.clusterwide = config.clusterwide
    settings.peering.mandatory = not config.standalone
    # Distinct priorities are what let several instances share one peering: kopf pauses
    # every peer that sees a live peer of higher *or equal* priority.
    settings.peering.priority = config.peering_priority
    settings.peering.lifetime = config.peering_lifetime


def build_registry(ctx: OperatorContext) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(settings: kopf.OperatorSettings, **kwargs: Any) -> kopf.ConnectionInfo | None:
        # kopf calls this at start and again after any 401 of its own; the result becomes
        # ctx.connection, which our client reads on every request.
        info = kube.login(settings=settings, **kwargs)
        ctx.logged_in(info, settings)
        return info

    for name in HANDLER_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                logger.info("controller module %s is not installed; skipped", name)
                continue
            raise
        register: Callable[[kopf.OperatorRegistry, OperatorContext], None] = module.register
        register(registry, ctx)
    for kind, routes in ctx.routes.items():
        _watch_children(registry, ctx, kind, routes)
    if ctx.standby is not None:
        _watch_peering(registry, ctx, ctx.standby)

    @kopf.on.startup(registry=registry)
    async def start_queue(**_: Any) -> None:
        await ctx.queue.start()

    @kopf.on.cleanup(registry=registry)
    async def stop_queue(**_: Any) -> None:
        await ctx.queue.stop()

    return registry


def _watch_children(
    registry: kopf.OperatorRegistry, ctx: OperatorContext, kind: str, routes: list[ChildRoute]
) -> None:
    group, version, plural = CHILD_RESOURCES[kind]

    labels = {LABEL_MANAGED_BY: MANAGED_BY}

    # An index handler, because kopf lists every indexed kind completely before it runs any
    # other handler: no reconcile ever sees a half-listed set of children (a status that
    # misses a healthy object's pods), and the cache holds kopf's own listing, not a second
    # snapshot of ours that a deletion in between would leave stale. It stores nothing in
    # kopf's index (None): the cache is the store.
    @kopf.index(group, version, plural, labels=labels, registry=registry, id=f"cache-{plural}")
    def child_seen(body: kopf.Body, **_: Any) -> None:
        raw = cast(JsonDict, dict(body))
        if ctx.cache.wrote(kind, raw):  # not what the cache knew (e.g. our own write)
            for route in routes:
                route(None, kind, raw)

    # kopf does not call index handlers for a deletion.
    @kopf.on.event(group, version, plural, labels=labels, registry=registry, id=f"gone-{plural}")
    async def child_gone(type: str | None, body: kopf.Body, **_: Any) -> None:
        raw = cast(JsonDict, dict(body))
        if type == "DELETED" and ctx.cache.seen(kind, type, raw):
            for route in routes:
                route(type, kind, raw)


def _watch_peering(
    registry: kopf.OperatorRegistry, ctx: OperatorContext, standby: peering.Standby
) -> None:
    """Keep the peering object's peers in view, so the queue stands by with kopf."""
    group, version, plural = peering.resource(ctx.config.clusterwide)

    @kopf.on.event(
        group, version, plural, registry=registry, id="peering", field="metadata.name",
        value=ctx.config.peering,
    )  # fmt: skip
    async def peers_changed(type: str | None, body: kopf.Body, **_: Any) -> None:
        standby.update(None if type == "DELETED" else cast(JsonDict, dict(body)))


def configure_logging(config: OperatorConfig) -> None:
    kopf.configure(
        debug=config.log_level == "DEBUG",
        verbose=config.log_level == "DEBUG",
        quiet=config.log_level in ("WARNING", "ERROR"),
        log_format=kopf.LogFormat.JSON if config.log_format == "json" else kopf.LogFormat.FULL,
        log_refkey="object" if config.log_format == "json" else None,
    )
    if config.log_level == "ERROR":
        logging.getLogger().setLevel(logging.ERROR)


async def run_operator(
    ctx: OperatorContext,
    *,
    stop_flag: asyncio.Event | threading.Event | None = None,
    ready_flag: asyncio.Event | threading.Event | None = None,
    liveness: bool = True,
    settings_hook: Callable[[kopf.OperatorSettings], None] | None = None,
) -> None:
    """Run until ``stop_flag`` is set or a signal arrives.

    ``settings_hook`` may adjust kopf's settings after ours (tests shorten idle timeouts).
    """
    config = ctx.config
    if not config.standalone:
        # kopf names this instance in the peering object by POD_ID (the chart sets it to
        # the pod's name); one is chosen here when it is not set, so we know it too.
        own = os.environ.setdefault("POD_ID", f"{socket.gethostname()}-{os.getpid()}")
        ctx.standby = peering.Standby(own, config.peering_priority)
    settings = kopf.OperatorSettings()
    configure_settings(settings, config)
    if settings_hook is not None:
        settings_hook(settings)
    metrics_server = None
    if config.metrics_port:
        metrics_server = await start_server(ctx.metrics, config.health_host, config.metrics_port)
    try:
        await kopf.operator(
            registry=build_registry(ctx),
            settings=settings,
            clusterwide=config.clusterwide,
            namespaces=list(config.namespaces),
            standalone=config.standalone,
            peering_name=config.peering or None,
            liveness_endpoint=config.liveness_endpoint if liveness else None,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
    finally:
        if metrics_server is not None:
            await metrics_server.cleanup()
        # After kopf returns every handler has finished, so nothing can reopen it.
        await ctx.close()
