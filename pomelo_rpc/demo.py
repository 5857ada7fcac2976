"""``python -m pomelo_rpc demo``: a small cluster on loopback, routed calls, a figures table."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import pomelo_rpc
from pomelo_rpc import RemoteError, client, processes
from pomelo_rpc.bench import measure

HERE = os.path.dirname(os.path.abspath(__file__))
REMOTE = os.path.join(HERE, "demo_remote")
DEMO_TTL = 2.0      # --registry: a killed server's record expires after this
CLUSTER = [("area-1", "area"), ("area-2", "area"), ("area-3", "area"),
           ("chat-1", "chat"), ("chat-2", "chat")]


async def _membership(cli: client.RpcClient, procs: list[subprocess.Popen[str]]) -> None:
    """Kill one area server, stop another gracefully, and show the client's list follow."""
    print(f"\nmembership (registry_ttl {DEMO_TTL:g} s): area servers {cli.server_ids('area')}")
    for index, how in ((2, "SIGKILL"), (1, "SIGTERM")):
        sid = CLUSTER[index][0]
        t0 = time.monotonic()
        if how == "SIGKILL":
            procs[index].kill()
        else:
            procs[index].terminate()
        while sid in cli.server_ids("area") and time.monotonic() - t0 < DEMO_TTL + 5:
            await asyncio.sleep(0.01)
        done = "killed: its record expired" if how == "SIGKILL" else "stopped: it deregistered"
        print(f"  {sid} {done}; gone from the client after {time.monotonic() - t0:.2f} s: "
              f"area servers {cli.server_ids('area')}")
    answers = {(await cli.proxies.user.area.player.move({"uid": u}, u, 0, 0))["server_id"]
               for u in range(1001, 1013)}
    print(f"  12 sessions now land on {sorted(answers)}")


async def main(args: argparse.Namespace) -> None:
    """Start the cluster, route calls across it, print what happened and the figures."""
    print(f"pomelo_rpc demo: {pomelo_rpc.IMPLEMENTATION} core, "
          f"loop {type(asyncio.get_running_loop()).__module__.split('.')[0]}")
    procs: list[subprocess.Popen[str]] = []
    uid: Any   # a uid in the routing loop, then an iterator of uids for the routed row
    try:
        servers = []
        for sid, server_type in CLUSTER:
            if args.registry:
                proc, port = processes.start(
                    [sys.executable, "-m", "pomelo_rpc", "serve", "--server-id", sid,
                     "--server-type", server_type, "--remote", f"user={REMOTE}/{server_type}",
                     "--registry", args.registry, "--registry-ttl", str(DEMO_TTL),
                     "--cluster", "demo"])
            else:
                proc, port = processes.start_server(sid, server_type, f"{REMOTE}/{server_type}")
            procs.append(proc)
            servers.append({"id": sid, "server_type": server_type, "host": "127.0.0.1",
                            "port": port})
        for info in servers:
            print(f"  server {info['id']:<7} type {info['server_type']:<5} "
                  f"listening on 127.0.0.1:{info['port']} (own process)")
        registry = _metrics_registry()
        observed = {"metrics": registry is not None, "metrics_registry": registry}
        if args.registry:
            cli = client.create(context={"server_id": "connector-1"}, registry=args.registry,
                                cluster="demo", **observed)
        else:
            cli = client.create(context={"server_id": "connector-1"}, **observed)
            cli.add_servers(servers)
        cli.add_proxies([{"namespace": "user", "server_type": "area", "path": f"{REMOTE}/area"},
                         {"namespace": "user", "server_type": "chat", "path": f"{REMOTE}/chat"}])
        await cli.start()
        if args.registry:
            print(f"the client follows cluster 'demo' in {args.registry}: "
                  f"area {cli.server_ids('area')}, chat {cli.server_ids('chat')}")
        area = cli.proxies.user.area.player
        chat = cli.proxies.user.chat.room

        print("\nrouting sessions by uid (pomelo's default router: crc32(uid) % servers):")
        placed: dict[str, list[int]] = {}
        for uid in range(1001, 1013):
            session = {"uid": uid}
            answer = await area.move(session, uid, uid % 7, uid % 5)
            placed.setdefault(answer["server_id"], []).append(uid)
            await chat.say(session, uid, f"hello from {uid}")
        for sid in sorted(placed):
            print(f"  {sid}: uids {placed[sid]}")
        counts = await area.count.to_server("*")
        print("to_server('*') on every area server:",
              ", ".join(f"{sid}={c['players']} players" for sid, c in sorted(counts.items())))
        print("chat history on chat-1:", await chat.history.to_server("chat-1", 3))
        try:
            await area.teleport({"uid": 1001}, 1001, "the moon")
        except RemoteError as exc:
            print(f"a remote that raises reaches the caller as RemoteError: {exc}")

        print(f"\nlatency and throughput (client in this process, servers in theirs; "
              f"{args.seconds:g} s each):")
        print(f"  {'scenario':<42} {'calls/s':>9} {'p50 µs':>8} {'p99 µs':>8}")
        rows = [("1 in flight, 10 B payload, one server", 1, 10, False),
                ("100 in flight, 10 B payload, one server", 100, 10, False),
                ("100 in flight, 1000 B payload, one server", 100, 1000, False),
                ("100 in flight, 10 B, routed over 3 servers", 100, 10, True)]
        for label, conc, size, routed in rows:
            if routed:
                uid = iter(range(10 ** 9))
                call = lambda payload: area.echo({"uid": next(uid)}, payload)  # noqa: E731
            else:
                call = lambda payload: area.echo.to_server("area-1", payload)  # noqa: E731
            await measure(call, conc, 0.2, size)                  # warm-up
            r = await measure(call, conc, args.seconds, size)
            print(f"  {label:<42} {r['calls_per_s']:>9,.0f} {r['p50_us']:>8.0f} "
                  f"{r['p99_us']:>8.0f}")
        if args.registry:
            await _membership(cli, procs)
        await cli.stop()
        _print_metrics(registry)
    finally:
        processes.stop_all(procs)
    print("\ncluster stopped.")


def _metrics_registry() -> Any:
    """A prometheus_client registry for the demo client's metrics; None without the extra."""
    try:
        from prometheus_client import CollectorRegistry
    except ImportError:
        return None
    return CollectorRegistry()


def _print_metrics(registry: Any) -> None:
    """The client's own metrics (metrics=True): calls by server, p50/p99 from the histogram."""
    if registry is None:
        print("\n(metrics: pip install 'pomelo-rpc[metrics]' to see the client's own)")
        return
    from pomelo_rpc.metrics import client_summary
    print("\nthe client's own metrics (metrics=True: every call above; p50/p99 from the "
          "histogram's buckets):")
    print(f"  {'server':<8} {'calls':>9} {'p50 µs':>8} {'p99 µs':>8}")
    for server_id, (count, p50, p99) in client_summary(registry).items():
        print(f"  {server_id:<8} {count:>9,} {p50 * 1e6:>8.0f} {p99 * 1e6:>8.0f}")
