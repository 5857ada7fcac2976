"""Every option of server.create and client.create, with its default, in one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

#: Options of ``server.create`` (a key absent here is rejected as unknown).
SERVER_DEFAULTS: dict[str, Any] = {
    "paths": (),              # [{"namespace": ..., "path": dir}] of remote services
    "port": 0,                # 0 binds an ephemeral port; read it back from ``gateway.port``
    "host": "127.0.0.1",      # address to bind
    "context": None,          # passed to each service module's ``create(context)``
    "services": None,         # {namespace: {service_name: object}} added to those of ``paths``
    "acceptor_factory": None,  # callable(opts, dispatcher) -> acceptor, replaces the transport
    "transport": "native",    # "native" or "mqtt" (pomelo-rpc 1.0.7's wire format)
    "pkg_size": 8 * 1024 * 1024,  # largest frame accepted, in bytes
    "stop_grace": 5.0,        # seconds ``stop`` waits for calls already received
    # pomelo's bufferMsg + interval: batch responses, flushed every ``interval`` seconds
    # (pomelo's interval is in ms, 50 by default; ours is in seconds). Used by "mqtt".
    "buffer_msg": False,
    "interval": 0.05,
    "core": None,             # "cython" / "python"; None: pomelo_rpc.IMPLEMENTATION
    # pomelo's reloadRemotes: poll the ``paths`` directories every ``reload_interval`` s
    # and reload a service whose file changed, appeared or went away. Calls already
    # running finish on the old code; method ids of methods that stay do not change.
    "reload_remotes": False,
    "reload_interval": 1.0,
    # pomelo's rpcDebugLog: log each call (trace id from the caller, route, server id,
    # duration) at DEBUG on the "pomelo_rpc.trace" logger
    "rpc_debug_log": False,
    # cluster membership (README "Clusters"): the record other processes see, {"id",
    # "server_type", extras}; host/port default to the bound address
    "server_info": None,
    # a URL (file:///path/servers.json, redis://host:port/db, etcd://host:port,
    # pomelo://host:port) or a pomelo_rpc.registry.Registry object; None: no registry
    "registry": None,
    "registry_ttl": 10.0,     # s a record outlives its server (refreshed every ttl/3)
    "registry_connect_timeout": 5.0,  # s ``start`` may wait for the registry's engine
    "cluster": "default",     # clusters on one engine never see each other
    # observability (README "Observability"): Prometheus metrics of the calls served
    # (extra pomelo-rpc[metrics]) in ``metrics_registry`` (a prometheus_client
    # CollectorRegistry; None: its global one); OpenTelemetry SERVER spans (extra
    # pomelo-rpc[otel]): True uses the global tracer provider, or give a TracerProvider
    "metrics": False,
    "metrics_registry": None,
    "tracing": False,
    # cluster membership (README "Clusters"): the record other processes see, {"id",
    # "server_type", extras}; host/port default to the bound address
    "server_info": None,
    # a URL (file:///path/servers.json, redis://host:port/db, etcd://host:port,
    # pomelo://host:port) or a pomelo_rpc.registry.Registry object; None: no registry
    "registry": None,
    "registry_ttl": 10.0,     # s a record outlives its server (refreshed every ttl/3)
    "registry_connect_timeout": 5.0,  # s ``start`` may wait for the registry's engine
    "cluster": "default",     # clusters on one engine never see each other
    # security (README "Security"): an ssl.SSLContext (mutual TLS when it requires client
    # certificates); a shared secret clients must prove they hold (HMAC challenge, the
    # secret never sent; mqtt: CONNECT password); addresses/networks allowed to connect
    # (None: any); connections held at once (None: no bound); seconds a new connection
    # has to finish the TLS and auth_token handshakes
    "ssl": None,
    "auth_token": None,
    "allow": None,
    "max_connections": None,
    "handshake_timeout": 5.0,
    # overload (README "Overload"): calls held at once, queued or running (None: no
    # bound); past it a call is answered ServerBusyError at once. The budget of calls
    # that carry none (Node clients), in s (None: none). Seconds of synchronous handlers
    # run per loop turn before the rest waits for the next turn. ``deadlines=False``
    # ignores the callers' budgets (nothing skipped or cancelled: for comparisons)
    "max_in_flight": None,
    "default_budget": None,
    "handler_slice": 0.003,
    "deadlines": True,
}

#: Options of ``client.create``.
CLIENT_DEFAULTS: dict[str, Any] = {
    "context": None,          # the client's own context, e.g. {"server_id": "connector-1"}
    "router": None,           # router(route_param, msg, route_context) -> server id
    "route_context": None,    # third argument of the router
    "router_type": None,      # built-in router by name; wins over ``router`` (as in pomelo)
    "mailbox_factory": None,  # callable(server_info, opts) -> mailbox, replaces the transport
    "transport": "native",
    "timeout": 10.0,          # seconds a call may wait for its response
    "connect_timeout": 5.0,   # seconds a connection may take to open
    "pending_size": 10000,    # calls that may wait while a connection opens
    "pkg_size": 8 * 1024 * 1024,
    "keepalive": 0,           # seconds between pings on an idle connection; 0 disables
    "hash_field_index": 0,    # argument hashed by the "ch" router
    # what a call does when its connection fails: "failfast" (raise), "failover" (the
    # other servers of the type), "failsafe" (retry the same server), "failback" (wait for
    # the server to come back, then resend). All but failfast may run a call twice.
    "fail_mode": "failfast",
    "retry_times": 3,         # failsafe: retries after the first attempt
    "retry_connect_time": 0.2,  # failsafe/failback: first delay in s, growing with each retry
    "failback_size": 1000,    # failback: calls that may wait for their server to come back
    # pomelo's bufferMsg + interval: batch requests, flushed every ``interval`` seconds
    # (pomelo's interval is in ms, 50 by default; ours is in seconds). Used by "mqtt".
    "buffer_msg": False,
    "interval": 0.05,
    "core": None,
    # pomelo's rpcDebugLog: send each call's trace context with the request (the
    # server logs it too) and log the call and its outcome at DEBUG on "pomelo_rpc.trace"
    "rpc_debug_log": False,
    # follow a cluster's servers in a registry (a URL or a Registry object, as on
    # server.create); ``start`` loads them within ``connect_timeout``
    "registry": None,
    "cluster": "default",
    # observability, as on server.create: metrics of the calls made (by route and
    # server), a CLIENT span per call whose context travels with the request
    "metrics": False,
    "metrics_registry": None,
    "tracing": False,
    # follow a cluster's servers in a registry (a URL or a Registry object, as on
    # server.create); ``start`` loads them within ``connect_timeout``
    "registry": None,
    "cluster": "default",
    # security (README "Security"): an ssl.SSLContext for the connections; the name its
    # certificate is checked against (None: the server's host); the servers' shared secret
    "ssl": None,
    "server_hostname": None,
    "auth_token": None,
}


def merge(defaults: Mapping[str, Any], given: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Return ``defaults`` updated by ``given``; an unknown key is a TypeError."""
    unknown = set(given) - set(defaults)
    if unknown:
        raise TypeError(f"{what}: unknown option(s) {', '.join(sorted(unknown))}")
    opts = dict(defaults)
    opts.update(given)
    return opts


def env_wants_pure() -> bool:
    """True when POMELO_RPC_PURE asks for the pure-Python core."""
    return os.environ.get("POMELO_RPC_PURE", "") not in ("", "0")
