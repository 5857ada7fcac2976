"""Every option of server.create and client.create, with its default, in one place.

The format is kept simple, because the options reference of the documentation is
generated from this file (docs/_ext/options_reference.py reads it with ``ast`` and
``tokenize``): each dict below maps an option to its default, and each option has a
``#`` comment saying what it is, beside it or in a block of comment lines right above it
(an option with no comment of its own directly below another that took its comment from
a block shares that block). A key written twice, or an option without a comment, fails
the documentation's build.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

#: Options of ``server.create`` (a key absent here is rejected as unknown).
SERVER_DEFAULTS: dict[str, Any] = {
    "paths": (),              # [{"namespace": ..., "path": dir}]: directories of remote services
    "port": 0,                # port to bind; 0 picks an ephemeral one, read back from ``gw.port``
    "host": "127.0.0.1",      # address to bind
    "context": None,          # passed to each service module's ``create(context)``
    # {namespace: {service_name: object, module or dict of callables}} added to the
    # services loaded from ``paths``
    "services": None,
    "acceptor_factory": None,  # callable(opts, dispatcher) -> acceptor, replaces the transport
    # "native", "mqtt" (pomelo-rpc 1.0.7's wire format) or "pinus-tcp" (pinus-rpc
    # 1.7's tcp transport)
    "transport": "native",
    # largest frame accepted, in bytes; a larger one closes that connection
    "pkg_size": 8 * 1024 * 1024,
    # seconds ``stop`` waits for calls already received; later ones are cancelled and
    # answered with an error
    "stop_grace": 5.0,
    # mqtt, pinus-tcp: batch answers, flushed every ``interval`` seconds (pomelo's bufferMsg)
    "buffer_msg": False,
    # seconds between two flushes of ``buffer_msg`` (pomelo's interval is in ms, 50 by default)
    "interval": 0.05,
    # "cython" or "python"; None: pomelo_rpc.IMPLEMENTATION (the compiled core unless
    # POMELO_RPC_PURE=1)
    "core": None,
    # pomelo's reloadRemotes: reload a service whose file changed, appeared or went away.
    # Calls already running finish on the old code; method ids of methods that stay do not
    # change, a removed method answers a clear error, a file that fails to load is logged
    # and the old code keeps serving
    "reload_remotes": False,
    "reload_interval": 1.0,   # seconds between two polls of the ``paths`` directories
    # pomelo's rpcDebugLog: log each call received and answered (trace id from the caller,
    # route, server id, duration) at DEBUG on the "pomelo_rpc.trace" logger
    "rpc_debug_log": False,
    # with ``registry``: this server's record, {"id", "server_type", extras}; host/port
    # default to the bound address (docs/clusters.md)
    "server_info": None,
    # publish the record there while running: a URL (file:///path/servers.json,
    # redis://host:port/db, etcd://host:port, pomelo://host:port) or a
    # pomelo_rpc.registry.Registry object; None: no registry
    "registry": None,
    "registry_ttl": 10.0,     # seconds a killed server's record outlives it (refreshed: ttl/3)
    # seconds ``start`` may wait for the registry's engine (then RegistryError, and the
    # server stops listening)
    "registry_connect_timeout": 5.0,
    "cluster": "default",     # the cluster's name on the engine; clusters never see each other
    # Prometheus metrics of the calls served (extra pomelo-rpc[metrics]; docs/observability.md)
    "metrics": False,
    # the prometheus_client CollectorRegistry of ``metrics``; None: its global REGISTRY
    "metrics_registry": None,
    # an OpenTelemetry SERVER span per request, child of the caller's span (extra
    # pomelo-rpc[otel]): True uses the global tracer provider, or give a TracerProvider
    "tracing": False,
    # an ssl.SSLContext: serve over TLS; mutual TLS when it requires client certificates
    # (pomelo_rpc.security.server_ssl_context(cert, key, ca); docs/security.md)
    "ssl": None,
    # a shared secret (str or bytes) clients must prove they hold before anything else
    # (HMAC challenge, the secret never sent; mqtt: the CONNECT password)
    "auth_token": None,
    # addresses/networks allowed to connect ("10.0.0.0/8,192.168.1.7", a list, ipaddress
    # objects); others are closed at accept and logged; None: anyone
    "allow": None,
    # connections held at once; past it new ones are closed at accept and logged; None: no bound
    "max_connections": None,
    # seconds a new connection has to finish the TLS handshake and prove the auth_token;
    # then it is closed
    "handshake_timeout": 5.0,
    # calls held at once, queued or running; past it a call is answered ServerBusyError
    # at once; None: no bound (docs/overload.md)
    "max_in_flight": None,
    # seconds of deadline for calls that carry none (Node clients); None: none
    "default_budget": None,
    # seconds of synchronous handlers run per loop turn; the requests read after it wait
    # for the next turn
    "handler_slice": 0.003,
    # honour the callers' budgets (skip a request expired before it starts, cancel a
    # coroutine at its deadline); False ignores them (nothing skipped: for comparisons)
    "deadlines": True,
    # liveness (docs/liveness.md): a connection from which nothing arrived for this many
    # seconds is closed (clients ping while idle: pomelo_rpc every ``keepalive``, Node
    # pomelo-rpc every 10 s), so that half-open connections of vanished clients do not
    # pile up (0: never)
    "idle_timeout": 60.0,
    # seconds sent data may stay unacknowledged before the kernel drops the connection
    # (TCP_USER_TIMEOUT, Linux; 0: the system's default, many minutes)
    "tcp_user_timeout": 10.0,
    # backend servers (docs/backend-servers.md): a directory of player request handlers
    # (pomelo's app/servers/<type>/handler): the server serves sys.msgRemote.forwardMessage
    # to Node connectors (needs transport="mqtt", or "pinus-tcp" in a pinus cluster);
    # None: no handlers
    "handlers": None,
    # reload a handler whose file changed (checked every ``reload_interval`` s), as
    # reload_remotes does for remote services
    "reload_handlers": False,
    # options of the handlers' client (app.rpc and the calls to the connectors' sys
    # remotes), as client.create takes them, e.g. {"timeout": 5, "fail_mode":
    # "failover"}; transport, core and the registry are the gateway's unless given
    "rpc_options": None,
    # transport "pinus-tcp": close a connection that sent nothing for this many seconds
    # (checked every as many seconds, so after between 1 and 2 times it, as pinus-rpc's
    # acceptor does: its clients ping every 25 s); 0 or None: never
    "pinus_idle_timeout": 30.0,
    # Linux: run the event loop's thread under SCHED_BATCH while the server runs: woken by a
    # request, it does not preempt its sender (a Node connector writes a forward in five
    # pieces) and finds several whole requests; a backend behind a NODELAY pomelo connector
    # then uses a third to half less CPU per request, a lone request may wait a few ms for a busy
    # CPU (docs/backend-servers.md). Unprivileged; the previous policy is restored at stop
    "sched_batch": False,
    # seconds a connection's reads may wait so that one wake-up reads several requests
    # (0: off), as a network card moderates its interrupts: after a read, while its
    # requests arrive at least two per window on average, the socket wakes the loop
    # again only at the window's end (SO_RCVLOWAT, Linux), or for 16 KiB; answers are
    # written at once as ever. Behind a NODELAY pomelo connector, e.g. 0.001: fewer
    # wake-ups, less CPU per request, up to the window of added latency
    # (docs/backend-servers.md)
    "read_coalesce": 0.0,
}

#: Options of ``client.create``.
CLIENT_DEFAULTS: dict[str, Any] = {
    # the client's own context, e.g. {"server_id": "connector-1"} (also given to the
    # services' ``create(context)`` when proxies are generated from their directory)
    "context": None,
    # router(route_param, msg, route_context) -> server id, sync or async, or an object
    # with ``.route``; None: pomelo's default (crc32 of the session's uid)
    "router": None,
    "route_context": None,    # third argument of the router
    # a built-in router by name ("rr", "wrr", "la", "ch", "rd"); wins over ``router``,
    # as in pomelo (docs/routing.md)
    "router_type": None,
    "mailbox_factory": None,  # callable(server_info, opts) -> mailbox, replaces the transport
    "transport": "native",    # "native", "mqtt" or "pinus-tcp", as on server.create
    # seconds a call may wait for its response (per call: ``timeout=``; 0: none); the
    # server is told what is left, and calls made inside a handler keep to it
    "timeout": 10.0,
    "connect_timeout": 5.0,   # seconds a connection may take to open
    # calls that may wait while a connection opens; past it, PendingQueueFullError
    "pending_size": 10000,
    "pkg_size": 8 * 1024 * 1024,  # largest request frame sent or response frame accepted, in bytes
    # seconds of silence on a connection before it sends a ping (0: off); unanswered,
    # the connection is declared dead (after liveness_timeout, at most twice this).
    # Servers close connections idle for their ``idle_timeout`` (60 s): keep this under
    # half of it
    "keepalive": 20.0,
    # liveness under load (docs/liveness.md): a connection with calls in flight from
    # which nothing arrived for this many seconds sends a ping
    "liveness_interval": 0.5,
    # ... and one silent this long (with calls in flight, a ping unanswered, or its
    # connect not done) is declared dead: closed, its calls failed at once with
    # ConnectionLostError, its server unavailable. A server that blocks its event loop
    # longer than this looks dead: raise it for such servers (0: off)
    "liveness_timeout": 1.5,
    # an unavailable server (connection failed, declared dead, connect failed) is probed
    # in the background (a connect and a ping) this many seconds after the failure,
    # the wait doubling with each failed probe; calls to it fail at once meanwhile
    # (ServerUnavailableError) and the load-spreading routers skip it
    "probe_backoff": 0.1,
    "probe_backoff_max": 5.0,  # the longest wait between two probes, in seconds
    # seconds sent data may stay unacknowledged before the kernel drops the connection
    # (TCP_USER_TIMEOUT, Linux; 0: the system's default, many minutes)
    "tcp_user_timeout": 10.0,
    "hash_field_index": 0,    # argument hashed by the "ch" router
    # what a call does when its connection fails: "failfast" (raise), "failover" (the
    # other servers of the type), "failsafe" (retry the same server), "failback" (wait for
    # the server to come back, then resend). All but failfast may run a call twice.
    "fail_mode": "failfast",
    "retry_times": 3,         # failsafe: retries after the first attempt
    "retry_connect_time": 0.2,  # failsafe/failback: first delay in s, growing with each retry
    "failback_size": 1000,    # failback: calls that may wait for their server to come back
    # mqtt: batch requests, flushed every ``interval`` seconds (pomelo's bufferMsg)
    "buffer_msg": False,
    # seconds between two flushes of ``buffer_msg`` (pomelo's interval is in ms, 50 by default)
    "interval": 0.05,
    # "cython" or "python"; None: pomelo_rpc.IMPLEMENTATION (the compiled core unless
    # POMELO_RPC_PURE=1)
    "core": None,
    # pomelo's rpcDebugLog: send each call's trace context with the request (the
    # server logs it too) and log the call and its outcome at DEBUG on "pomelo_rpc.trace"
    "rpc_debug_log": False,
    # follow a cluster's servers in a registry (a URL or a Registry object, as on
    # server.create); ``start`` loads them within ``connect_timeout``
    "registry": None,
    "cluster": "default",     # the cluster to follow
    # Prometheus metrics of the calls made, by route and server (extra pomelo-rpc[metrics])
    "metrics": False,
    # the prometheus_client CollectorRegistry of ``metrics``; None: its global REGISTRY
    "metrics_registry": None,
    # an OpenTelemetry CLIENT span per call, its context carried to the server (extra
    # pomelo-rpc[otel]): True uses the global tracer provider, or give a TracerProvider
    "tracing": False,
    # an ssl.SSLContext for the connections (pomelo_rpc.security.client_ssl_context(ca,
    # cert, key); a client certificate for mutual TLS)
    "ssl": None,
    "server_hostname": None,  # the name the server's certificate must carry; None: its host
    # the servers' shared secret; with it, a server that cannot prove it holds the same
    # one is refused too
    "auth_token": None,
    # transport "pinus-tcp", as pinus-rpc's tcp mailbox: a ping every this many seconds
    # on each connection (0 or None: none), and the connection closed (its calls failed)
    # when the pong does not come within ``pinus_pong_timeout`` s
    "pinus_ping_interval": 25.0,
    "pinus_pong_timeout": 10.0,
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
