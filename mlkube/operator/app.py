"""Assembling and running the kopf operator: settings, login, handler modules.

kopf is run programmatically (``kopf.operator``) with an explicit registry and settings, so
nothing depends on import side effects or on kopf's CLI, and tests start the very same
operator in-process against an API mock.

Each controller lives in a module with ``register(registry, ctx) -> None`` (listed in
``HANDLER_MODULES``); a module that is not there yet is skipped, so controllers land
independently. ``ctx`` (an :class:`OperatorContext`) carries the configuration and the
API client; handlers close over it (kopf's ``memo`` is copied per object, which would give
every object its own HTTP session).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import kopf

from mlkube.operator import kube
from mlkube.operator.builders import BuildSettings
from mlkube.operator.config import OperatorConfig
from mlkube.operator.kube import KubeAPI
from mlkube.operator.metrics import OperatorMetrics, start_server
from mlkube.operator.timers import without_finalizers

HANDLER_MODULES = (
    "mlkube.operator.handlers",
    "mlkube.operator.progressive",
    "mlkube.operator.pytorchjob.handlers",
)
STATE_PREFIX = "mlkube.dev"
FINALIZER = "mlkube.dev/finalizer"

logger = logging.getLogger("mlkube.operator")


@dataclass
class OperatorContext:
    """Shared state of one operator process."""

    config: OperatorConfig
    connection: kopf.ConnectionInfo | None = None
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    _api: KubeAPI | None = None
    _login_settings: kopf.OperatorSettings | None = None
    _locks: dict[tuple[str, str, str], asyncio.Lock] = field(default_factory=dict)

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
        """One lock per object: the timer, spec changes and child events never reconcile
        the same object concurrently."""
        return self._locks.setdefault((kind, namespace, name), asyncio.Lock())

    async def close(self) -> None:
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
    # references; timers are made finalizer-free in build_registry). kopf still has to know
    # the name: it removes a finalizer it no longer needs, so objects that an older mlkube
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
    without_finalizers(registry)
    return registry


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
