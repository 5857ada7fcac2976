"""``python -m pomelo_rpc demo``: a small cluster on loopback, routed calls, a figures table."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pomelo_rpc
from pomelo_rpc import RemoteError, client

HERE = os.path.dirname(os.path.abspath(__file__))
REMOTE = os.path.join(HERE, "demo_remote")
CLUSTER = [("area-1", "area"), ("area-2", "area"), ("area-3", "area"),
           ("chat-1", "chat"), ("chat-2", "chat")]


def start_server(server_id: str,
                 server_type: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start ``python -m pomelo_rpc serve`` for one server; return (process, info)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(HERE) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pomelo_rpc", "serve", "--server-id", server_id,
         "--server-type", server_type, "--remote", f"user={REMOTE}/{server_type}"],
        stdout=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()  # type: ignore[union-attr]  # stdout=PIPE: not None
    if not line:
        raise RuntimeError(f"server {server_id} failed to start")
    port = json.loads(line)["port"]
    return proc, {"id": server_id, "server_type": server_type, "host": "127.0.0.1", "port": port}


async def measure(call: Callable[[], Awaitable[Any]], calls: int,
                  concurrency: int) -> tuple[float, float, float]:
    """Run ``calls`` awaits of ``call()`` with ``concurrency`` in flight; (calls/s, p50 µs, p99 µs)."""
    latencies: list[float] = []
    remaining = calls

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return calls / elapsed, statistics.median(latencies) * 1e6, p99 * 1e6


async def main(args: argparse.Namespace) -> None:
    """Start the cluster, route calls across it, print what happened and the figures."""
    print(f"pomelo_rpc demo: {pomelo_rpc.IMPLEMENTATION} core, "
          f"loop {type(asyncio.get_running_loop()).__module__.split('.')[0]}")
    procs: list[subprocess.Popen[str]] = []
    uid: Any   # a uid in the routing loop, then an iterator of uids for the routed row
    try:
        started = [start_server(sid, st) for sid, st in CLUSTER]
        procs = [p for p, _ in started]
        servers = [info for _, info in started]
        for info in servers:
            print(f"  server {info['id']:<7} type {info['server_type']:<5} "
                  f"listening on 127.0.0.1:{info['port']} (own process)")
        cli = client.create(context={"server_id": "connector-1"})
        cli.add_proxies([{"namespace": "user", "server_type": "area", "path": f"{REMOTE}/area"},
                         {"namespace": "user", "server_type": "chat", "path": f"{REMOTE}/chat"}])
        cli.add_servers(servers)
        await cli.start()
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
              f"{args.calls} calls each):")
        print(f"  {'scenario':<42} {'calls/s':>9} {'p50 µs':>8} {'p99 µs':>8}")
        rows = [("1 in flight, 10 B payload, one server", 1, 10, False),
                ("100 in flight, 10 B payload, one server", 100, 10, False),
                ("100 in flight, 1000 B payload, one server", 100, 1000, False),
                ("100 in flight, 10 B, routed over 3 servers", 100, 10, True)]
        for label, conc, size, routed in rows:
            payload = {"a": "run", "b": "x" * size, "time": 0}
            if routed:
                uid = iter(range(10 ** 9))
                call = lambda: area.echo({"uid": next(uid)}, payload)  # noqa: E731
            else:
                call = lambda: area.echo.to_server("area-1", payload)  # noqa: E731
            await measure(call, min(200, args.calls), conc)       # warm-up
            rate, p50, p99 = await measure(call, args.calls, conc)
            print(f"  {label:<42} {rate:>9,.0f} {p50:>8.0f} {p99:>8.0f}")
        await cli.stop()
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    print("\ncluster stopped.")
