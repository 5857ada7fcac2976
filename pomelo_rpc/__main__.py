"""Command line: ``python -m pomelo_rpc {serve,stubs,demo,bench}`` (also ``pomelo-rpc``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Sequence

import pomelo_rpc
from pomelo_rpc import server
from pomelo_rpc.options import SERVER_DEFAULTS


def _security_options(args: argparse.Namespace) -> dict[str, object]:
    """The ssl, auth_token, allow, max_connections, handshake_timeout options of
    ``serve``'s --tls-*, --auth-token(-file), --allow, ... flags."""
    from pomelo_rpc.security import server_ssl_context
    opts: dict[str, object] = {"handshake_timeout": args.handshake_timeout,
                               "max_connections": args.max_connections}
    if args.tls_cert:
        opts["ssl"] = server_ssl_context(args.tls_cert, args.tls_key, args.tls_ca)
    elif args.tls_key or args.tls_ca:
        raise SystemExit("--tls-key and --tls-ca need --tls-cert")
    token = args.auth_token
    if args.auth_token_file:
        with open(args.auth_token_file, encoding="utf-8") as f:
            token = f.read().strip()
    if token is not None:
        if not token:
            raise SystemExit("the auth token is empty")
        opts["auth_token"] = token
    if args.allow:
        opts["allow"] = ",".join(args.allow)
    return opts


def _remote_paths(specs: Sequence[str]) -> list[dict[str, str]]:
    """``[{"namespace", "path"}]`` of ``--remote NAMESPACE=DIR`` flags."""
    paths = []
    for spec in specs:
        namespace, _, path = spec.partition("=")
        if not path:
            raise SystemExit(f"--remote takes NAMESPACE=DIR, not {spec!r}")
        paths.append({"namespace": namespace, "path": path})
    return paths


def _stubs(args: argparse.Namespace) -> None:
    from pomelo_rpc.stubs import remoter_paths, write_stubs
    if not args.remote and not args.backend:
        raise SystemExit("stubs needs at least one --remote NAMESPACE=DIR, or --backend")
    out: dict[str, object] = {"written": write_stubs(_remote_paths(args.remote), args.out,
                                                     backend=args.backend)}
    if args.server_type:
        out["remoterPaths"] = remoter_paths(args.out, args.server_type, args.backend)
    print(json.dumps(out), flush=True)


async def _serve(args: argparse.Namespace) -> None:
    paths = _remote_paths(args.remote)
    context: dict[str, str] | None = {"server_id": args.server_id,
                                      "server_type": args.server_type}
    membership: dict[str, object] = {}    # --registry: the membership options
    if args.registry:
        membership = {"registry": args.registry, "registry_ttl": args.registry_ttl,
                      "cluster": args.cluster}
    if args.registry or args.handlers:
        membership["server_info"] = {"id": args.server_id, "server_type": args.server_type}
    if args.handlers:      # a backend server: handlers and remote services get the app
        membership.update(handlers=args.handlers, reload_handlers=args.reload_handlers)
        context = None
    gw = server.create(paths=paths, host=args.host, port=args.port, context=context,
                       **membership,
                       transport=args.transport, pkg_size=args.pkg_size,
                       stop_grace=args.stop_grace, reload_remotes=args.reload_remotes,
                       reload_interval=args.reload_interval, rpc_debug_log=args.rpc_debug_log,
                       metrics=args.metrics_port is not None, **_security_options(args),
                       max_in_flight=args.max_in_flight, default_budget=args.default_budget,
                       handler_slice=args.handler_slice, deadlines=not args.no_deadlines,
                       sched_batch=args.sched_batch, read_coalesce=args.read_coalesce)
    await gw.start()
    listening = {"event": "listening", "port": gw.port, "server_id": args.server_id,
                 "implementation": gw.core.name}
    if args.metrics_port is not None:
        from pomelo_rpc.metrics import serve as serve_metrics
        listening["metrics_port"] = serve_metrics(args.metrics_port, args.host)
    print(json.dumps(listening), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await gw.stop()


def _version() -> str:
    """What ``--version`` prints: the version, the core in use and the Python running it."""
    return (f"pomelo-rpc {pomelo_rpc.__version__} ({pomelo_rpc.IMPLEMENTATION} core, "
            f"Python {sys.version.split()[0]})")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m pomelo_rpc`` and the ``pomelo-rpc`` script."""
    parser = argparse.ArgumentParser(prog="pomelo-rpc", description=pomelo_rpc.__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run an rpc server process")
    p.add_argument("--remote", action="append", default=[], metavar="NAMESPACE=DIR",
                   help="remote service directory (repeatable)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks an ephemeral port")
    p.add_argument("--server-id", default="server-1")
    p.add_argument("--server-type", default="")
    p.add_argument("--transport", default="native")
    p.add_argument("--pkg-size", type=int, default=SERVER_DEFAULTS["pkg_size"],
                   help="largest request frame accepted, in bytes")
    p.add_argument("--stop-grace", type=float, default=SERVER_DEFAULTS["stop_grace"],
                   help="seconds SIGTERM waits for calls in flight before failing them")
    p.add_argument("--handlers", metavar="DIR",
                   help="a directory of player request handlers: a backend server of a "
                        "pomelo cluster, forwarded requests from Node connectors (needs "
                        "--transport mqtt; see docs/backend-servers.md)")
    p.add_argument("--sched-batch", action="store_true",
                   help="run the loop under SCHED_BATCH (Linux): a backend woken by its "
                        "connector lets it finish writing, and answers several requests per "
                        "wake-up (see docs/backend-servers.md)")
    p.add_argument("--read-coalesce", type=float, metavar="SECONDS",
                   default=SERVER_DEFAULTS["read_coalesce"],
                   help="let a connection's reads wait up to this long while requests "
                        "arrive fast, to read several per wake-up (e.g. 0.001; 0: off; "
                        "see docs/backend-servers.md)")
    p.add_argument("--reload-handlers", action="store_true",
                   help="reload a handler when its file changes (polled)")
    p.add_argument("--reload-remotes", action="store_true",
                   help="reload a service when its file changes (polled)")
    p.add_argument("--reload-interval", type=float, default=SERVER_DEFAULTS["reload_interval"],
                   help="seconds between two polls of the service files")
    p.add_argument("--rpc-debug-log", action="store_true",
                   help="log each call with its trace id on pomelo_rpc.trace (with -v)")
    p.add_argument("--tls-cert", metavar="PEM", help="serve over TLS with this certificate")
    p.add_argument("--tls-key", metavar="PEM", help="its private key (if not in --tls-cert)")
    p.add_argument("--tls-ca", metavar="PEM",
                   help="mutual TLS: require client certificates signed by this CA")
    p.add_argument("--auth-token", help="shared secret clients must prove (visible in ps: "
                   "prefer --auth-token-file)")
    p.add_argument("--auth-token-file", metavar="FILE", help="read the shared secret from FILE")
    p.add_argument("--allow", action="append", default=[], metavar="NET",
                   help="address or network allowed to connect (repeatable, or comma-separated)")
    p.add_argument("--max-connections", type=int, default=SERVER_DEFAULTS["max_connections"],
                   help="connections held at once; more are closed at accept")
    p.add_argument("--handshake-timeout", type=float,
                   default=SERVER_DEFAULTS["handshake_timeout"],
                   help="seconds a new connection has for the TLS and auth_token handshakes")
    p.add_argument("--max-in-flight", type=int, default=SERVER_DEFAULTS["max_in_flight"],
                   metavar="N", help="calls held at once; past it: busy (default: no bound)")
    p.add_argument("--default-budget", type=float, default=SERVER_DEFAULTS["default_budget"],
                   metavar="S", help="deadline of calls that carry none (Node clients), s")
    p.add_argument("--handler-slice", type=float, default=SERVER_DEFAULTS["handler_slice"],
                   metavar="S", help="s of synchronous handlers per loop turn")
    p.add_argument("--no-deadlines", action="store_true",
                   help="ignore the callers' budgets (for comparisons)")
    p.add_argument("--registry", metavar="URL",
                   help="register in a cluster: redis://h:p/db, etcd://h:p, "
                        "file:///servers.json, pomelo://master-host:port?token=T (Node pomelo "
                        "master; needs --transport mqtt), pinus://master-host:port?token=T"
                        "&stubs=DIR (pinus master; --transport mqtt or pinus-tcp)")
    p.add_argument("--registry-ttl", type=float, default=SERVER_DEFAULTS["registry_ttl"],
                   help="seconds the record outlives this process if it is killed")
    p.add_argument("--cluster", default=SERVER_DEFAULTS["cluster"],
                   help="cluster name (clusters on one engine never see each other)")
    p.add_argument("--metrics-port", type=int, metavar="N",
                   help="metrics=True, served as /metrics on this port (0 picks one, "
                        "printed as metrics_port); needs pomelo-rpc[metrics]")

    p = sub.add_parser("stubs", help="write JS stubs of remote services: what a pinus cluster "
                                     "builds app.rpc from (the registry's stubs=)")
    p.add_argument("--remote", action="append", default=[], metavar="NAMESPACE=DIR",
                   help="remote service directory (repeatable)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="writes DIR/<namespace>/<service>.js (stubs of services gone removed)")
    p.add_argument("--server-type", metavar="TYPE",
                   help="also print the remoterPaths a server of TYPE advertises for DIR")
    p.add_argument("--backend", action="store_true",
                   help="also write DIR/sys/msgRemote.js: a backend server's (--handlers) "
                        "forwardMessage, which pinus's connectors forward player requests "
                        "through")

    p = sub.add_parser("demo", help="start a small cluster on loopback and route calls across it")
    p.add_argument("--seconds", type=float, default=1.0, help="duration of each figure")
    p.add_argument("--registry", metavar="URL",
                   help="servers register there, the client follows them; one is killed "
                        "and one stopped mid-demo (e.g. file:///tmp/servers.json)")
    p.add_argument("--pomelo", action="store_true",
                   help="instead: a Python area server inside a Node pomelo 2.2.7 cluster "
                        "(master, two connectors) with simulated players (needs Node and "
                        "tests/node's npm packages: ./dev setup)")
    p.add_argument("--pinus", nargs="?", const="mqtt", choices=["mqtt", "pinus-tcp"],
                   help="instead: the same in a pinus 1.7.4 cluster, on pinus's rpc transport "
                        "mqtt (the default) or pinus-tcp (needs tests/pinus's npm packages too)")

    p = sub.add_parser("bench", help="end-to-end benchmark beside a raw uvloop echo")
    p.add_argument("--seconds", type=float, default=2.0, help="duration of each cell")
    p.add_argument("--transports", default="native", help="comma-separated, e.g. native,mqtt")
    p.add_argument("--clients", type=int, default=2, help="client processes in the multi-client row")
    p.add_argument("--servers", type=int, default=2, help="server processes in the routed row")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--plot", metavar="FILE", help="write a PNG chart (needs matplotlib)")
    p.add_argument("--sustained", type=float, metavar="SECONDS",
                   help="instead of the matrix: 100 calls in flight for SECONDS per core and "
                        "transport, calls/s and memory every --every s")
    p.add_argument("--every", type=float, default=10.0, help="interval of --sustained, s")
    p.add_argument("--rounds", type=int, default=3,
                   help="runs of every cell, the systems' order rotated each round; "
                        "median and min-max printed")
    p.add_argument("--instructions", action="store_true",
                   help="instead of the matrix: instructions per call under valgrind's "
                        "callgrind, client and server in one process (needs valgrind)")
    p.add_argument("--calls", type=int, default=2000,
                   help="--instructions: N of the runs of N and 3N calls subtracted")
    p.add_argument("--rows", metavar="ROW,...",
                   help="--instructions: only these rows (see docs/performance.md; default: "
                        "raw, raw-coalesced, cython-async, cython-def, python-async, python-def, "
                        "cython-notify, python-notify, cython-async-t0, raw-100c, "
                        "cython-async-100c, server-raw-100c, server-cython-100c, "
                        "client-raw-100c, client-cython-100c)")
    p.add_argument("--profile", metavar="FILE",
                   help="--instructions: write where the instructions of --profile-row go to FILE")
    p.add_argument("--profile-row", default="cython-async", metavar="ROW",
                   help="--instructions: the row --profile describes")
    p.add_argument("--connections", default="1,10,100,500", metavar="N,...",
                   help="the many-connection rows: connections with 2 calls in flight on each "
                        "(\"\": none)")
    p.add_argument("--rr-servers", default="1,8,64", metavar="N,...",
                   help="the many-server rows: the rr router over N gateways (\"\": none)")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.command == "serve":
        pomelo_rpc.run(_serve(args))
    elif args.command == "demo" and (args.pomelo or args.pinus):
        from pomelo_rpc.demo_pomelo import main as demo_pomelo_main
        pomelo_rpc.run(demo_pomelo_main(args))
    elif args.command == "stubs":
        _stubs(args)
    elif args.command == "demo":
        from pomelo_rpc.demo import main as demo_main
        pomelo_rpc.run(demo_main(args))
    elif args.command == "bench":
        from pomelo_rpc.bench import main as bench_main
        return bench_main(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
