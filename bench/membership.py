"""Membership figures on the real engines: how fast a change reaches the clients, and
what keeping 100 servers registered costs the engine.

    python bench/membership.py                    # file, redis and etcd
    python bench/membership.py --backends redis --trials 10

For each backend it starts its own engine (tests/engines.py: redis-server and etcd on
free loopback ports, a servers.json in a temporary folder), then:

- *join*: 1, 10 and 100 clients follow the cluster (each with its own registry
  connection, all in this process); a server registers, and the time from the start of
  ``gateway.start()`` until the first and the last client list it is measured
  (median over ``--trials``); the same for a graceful stop (until every client stops
  routing to it).
- *engine load*: 100 servers stay registered at the default ttl (10 s) for one ttl;
  the engine's own count of operations (Redis: INFO commandstats; etcd: gRPC messages
  received, from /metrics; file: rewrites of the file) gives operations per second,
  the servers' writes and each following client's reads apart (Redis clients poll;
  etcd clients watch; file clients only stat the file).
"""

import argparse
import asyncio
import os
import re
import statistics
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import pomelo_rpc  # noqa: E402
from pomelo_rpc import client, server  # noqa: E402
from pomelo_rpc.options import SERVER_DEFAULTS  # noqa: E402
from pomelo_rpc.registry.file import FileRegistry  # noqa: E402

import engines  # noqa: E402  (tests/engines.py)

AREA = os.path.join(ROOT, "tests", "remote", "area")


def gateway(url, sid, ttl):
    return server.create(paths=[{"namespace": "user", "path": AREA}], context={"server_id": sid},
                         server_info={"id": sid, "server_type": "area"}, registry=url,
                         registry_ttl=ttl, cluster="bench", stop_grace=0)


async def until_all(clients, check):
    """Seconds until ``check(cli)`` holds for the first and for the last client."""
    t0 = time.monotonic()
    first = None
    pending = list(clients)
    while pending:
        pending = [c for c in pending if not check(c)]
        if first is None and len(pending) < len(clients):
            first = time.monotonic() - t0
        if pending:
            await asyncio.sleep(0.001)
    return first, time.monotonic() - t0


async def propagation(eng, n_clients, trials):
    clients = []
    for _ in range(n_clients):
        cli = client.create(registry=eng.url, cluster="bench")
        await cli.start()
        clients.append(cli)
    joins, leaves = [], []
    for trial in range(trials):
        sid = f"area-{n_clients}-{trial}"
        gw = gateway(eng.url, sid, 2.0)
        start = asyncio.ensure_future(gw.start())     # timed from here by until_all
        first, last = await until_all(clients, lambda c: sid in c.server_ids("area"))
        await start
        joins.append((first, last))
        stop = asyncio.ensure_future(gw.stop())
        first, last = await until_all(clients, lambda c: sid not in c.server_ids("area"))
        leaves.append((first, last))
        await stop
    for cli in clients:
        await cli.stop()
    med = lambda xs: statistics.median(xs) * 1000  # noqa: E731
    return {"join_first_ms": med([j[0] for j in joins]), "join_last_ms": med([j[1] for j in joins]),
            "leave_first_ms": med([x[0] for x in leaves]),
            "leave_last_ms": med([x[1] for x in leaves])}


#: the engine operations of servers (keeping records alive) and of following clients
SERVER_OPS = {"redis": ("set", "sadd", "publish"), "etcd": ("LeaseKeepAlive", "Put", "LeaseGrant")}
CLIENT_OPS = {"redis": ("smembers", "mget", "srem", "subscribe"), "etcd": ("Range", "Watch")}


def redis_ops(eng):
    """Redis commands processed so far, by name (INFO commandstats)."""
    import redis
    stats = redis.Redis(port=eng.port).info("commandstats")
    return {k[len("cmdstat_"):]: v["calls"] for k, v in stats.items()}


def etcd_ops(eng):
    """gRPC messages etcd received so far, by method (its /metrics)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{eng.port}/metrics", timeout=5) as r:
        text = r.read().decode()
    ops = {}
    for method, value in re.findall(
            r'^grpc_server_msg_received_total\{[^}]*grpc_method="(\w+)"[^}]*\} (\S+)$', text,
            re.M):
        ops[method] = ops.get(method, 0) + float(value)
    return ops


FILE_WRITES = [0]


def count_file_writes():
    """Count the rewrites of servers.json (the file backend's only engine operation)."""
    original = FileRegistry._rewrite

    def counted(self, server_id, record):
        FILE_WRITES[0] += 1
        return original(self, server_id, record)

    FileRegistry._rewrite = counted


async def engine_load(eng, name, n_servers, seconds, n_clients=10):
    """Operations per second of ``n_servers`` kept alive at the default ttl (started
    spread over ttl/3, as a fleet is), and of each of ``n_clients`` following clients."""
    ttl = SERVER_DEFAULTS["registry_ttl"]
    gws = [gateway(eng.url, f"load-{i}", ttl) for i in range(n_servers)]
    for gw in gws:
        await gw.start()
        await asyncio.sleep(ttl / 3 / n_servers)
    clients = []
    for _ in range(n_clients):
        cli = client.create(registry=eng.url, cluster="bench")
        await cli.start()
        clients.append(cli)
    count = {"redis": redis_ops, "etcd": etcd_ops,
             "file": lambda eng: {"write": FILE_WRITES[0]}}[name]
    loop = asyncio.get_running_loop()
    before = await loop.run_in_executor(None, count, eng)
    await asyncio.sleep(seconds)
    after = await loop.run_in_executor(None, count, eng)
    for cli in clients:
        await cli.stop()
    await asyncio.gather(*(gw.stop(0) for gw in gws))
    rate = lambda names: sum(after.get(n, 0) - before.get(n, 0) for n in names) / seconds  # noqa: E731
    return rate(SERVER_OPS.get(name, ("write",))), rate(CLIENT_OPS.get(name, ())) / n_clients


async def run(args):
    count_file_writes()
    for name in args.backends.split(","):
        eng = engines.ENGINES[name]()
        try:
            for n in (1, 10, 100):
                r = await propagation(eng, n, args.trials)
                print(f"{name:>5} {n:>4} clients: join first {r['join_first_ms']:7.1f} ms, "
                      f"last {r['join_last_ms']:7.1f} ms; graceful leave first "
                      f"{r['leave_first_ms']:7.1f} ms, last {r['leave_last_ms']:7.1f} ms",
                      flush=True)
            servers_ops, client_ops = await engine_load(eng, name, 100, args.seconds)
            print(f"{name:>5} engine: {servers_ops:7.1f} ops/s for 100 servers at ttl "
                  f"{SERVER_DEFAULTS['registry_ttl']:g} s; {client_ops:.1f} ops/s per "
                  f"following client", flush=True)
        finally:
            eng.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backends", default="file,redis,etcd")
    p.add_argument("--trials", type=int, default=5, help="joins and leaves per client count")
    p.add_argument("--seconds", type=float, default=SERVER_DEFAULTS["registry_ttl"],
                   help="how long the engine load is counted (default: one ttl)")
    pomelo_rpc.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
