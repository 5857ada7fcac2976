"""Every option of server.create and client.create, with its default, in one place."""

import os

#: Options of ``server.create`` (a key absent here is rejected as unknown).
SERVER_DEFAULTS = {
    "paths": (),              # [{"namespace": ..., "path": dir}] of remote services
    "port": 0,                # 0 binds an ephemeral port; read it back from ``gateway.port``
    "host": "127.0.0.1",      # address to bind
    "context": None,          # passed to each service module's ``create(context)``
    "services": None,         # {namespace: {service_name: object}} added to those of ``paths``
    "acceptor_factory": None,  # callable(opts, dispatcher) -> acceptor, replaces the transport
    "transport": "native",    # "native" (the only built-in so far)
    "pkg_size": 8 * 1024 * 1024,  # largest frame accepted, in bytes
    "stop_grace": 5.0,        # seconds ``stop`` waits for calls already received
    "core": None,             # "cython" / "python"; None: pomelo_rpc.IMPLEMENTATION
}

#: Options of ``client.create``.
CLIENT_DEFAULTS = {
    "context": None,          # the client's own context, e.g. {"server_id": "connector-1"}
    "router": None,           # router(route_param, msg, route_context) -> server id
    "route_context": None,    # third argument of the router
    "router_type": None,      # built-in router by name, used when ``router`` is None
    "mailbox_factory": None,  # callable(server_info, opts) -> mailbox, replaces the transport
    "transport": "native",
    "timeout": 10.0,          # seconds a call may wait for its response
    "connect_timeout": 5.0,   # seconds a connection may take to open
    "pending_size": 10000,    # calls that may wait while a connection opens
    "pkg_size": 8 * 1024 * 1024,
    "keepalive": 0,           # seconds between pings on an idle connection; 0 disables
    "hash_field_index": 0,    # argument hashed by the "ch" router
    "core": None,
}


def merge(defaults, given, what):
    """Return ``defaults`` updated by ``given``; an unknown key is a TypeError."""
    unknown = set(given) - set(defaults)
    if unknown:
        raise TypeError(f"{what}: unknown option(s) {', '.join(sorted(unknown))}")
    opts = dict(defaults)
    opts.update(given)
    return opts


def env_wants_pure():
    """True when POMELO_RPC_PURE asks for the pure-Python core."""
    return os.environ.get("POMELO_RPC_PURE", "") not in ("", "0")
