"""Cost of TLS and of the auth_token on the native transport, against plaintext, in one run.

    python bench/security.py [--seconds 2] [--core cython|python] [--json]

Four server processes (``python -m pomelo_rpc serve``) serve the bench service:
plaintext, ``--auth-token-file``, ``--tls-cert/--tls-key`` (certificates made for the
run by pomelo_rpc.selfsigned), and TLS + token. This process is the client. Per
configuration: calls/s and p50/p99 of ``echo`` with 1 and with 100 calls in flight
(payload size 10), and connections/s: new connections opened (TCP, TLS, handshake,
up to the server's method table) and closed, 10 at a time. Cells run one after the
other with every configuration in turn, so a change of load on the machine hits a
cell's configurations alike, ``--rounds`` times (each round in another order); each
figure is the median of its rounds. Ratios compare cells of this run only.
"""

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pomelo_rpc  # noqa: E402
from pomelo_rpc import bench, client, processes  # noqa: E402
from pomelo_rpc import core as core_pkg  # noqa: E402
from pomelo_rpc.mailbox import NativeMailbox  # noqa: E402
from pomelo_rpc.options import CLIENT_DEFAULTS  # noqa: E402
from pomelo_rpc.security import client_ssl_context  # noqa: E402
from pomelo_rpc.selfsigned import make_certs  # noqa: E402

TOKEN = "bench-shared-secret"
CONFIGS = ("plaintext", "token", "tls", "tls+token")


def start_servers(certs, token_file, pure):
    """One server process per configuration: {name: (process, port)}."""
    out = {}
    for name in CONFIGS:
        flags = []
        if "tls" in name:
            flags += ["--tls-cert", certs.server_cert, "--tls-key", certs.server_key]
        if "token" in name:
            flags += ["--auth-token-file", token_file]
        out[name] = processes.start(
            [sys.executable, "-m", "pomelo_rpc", "serve", "--server-id", f"sec-{name}",
             "--server-type", "bench", "--remote", f"user={bench.REMOTE}"] + flags, pure)
    return out


def client_opts(name, certs, core):
    """The client options matching configuration ``name``."""
    opts = {"core": core}
    if "tls" in name:
        opts["ssl"] = client_ssl_context(certs.ca)
    if "token" in name:
        opts["auth_token"] = TOKEN
    return opts


async def calls(port, opts, concurrency, seconds):
    """calls/s, p50, p99 of echo with ``concurrency`` calls in flight."""
    cli = client.create(timeout=30, **opts)
    cli.add_proxies([{"namespace": "user", "server_type": "bench", "path": bench.REMOTE}])
    cli.add_servers([{"id": "b", "server_type": "bench", "port": port}])
    await cli.start()
    echo = cli.proxies.user.bench.bench.echo

    def call(payload):
        return echo.to_server("b", payload)

    await bench.measure(call, concurrency, min(0.3, seconds), 10)       # warm-up
    result = await bench.measure(call, concurrency, seconds, 10)
    await cli.stop()
    return result


async def connections(port, opts, seconds, parallel=10):
    """New connections per second: each opened up to the method table, then closed."""
    mailbox_opts = dict(CLIENT_DEFAULTS)
    mailbox_opts.update(opts)
    core = core_pkg.select(opts["core"])
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + seconds
    count = 0

    async def worker():
        nonlocal count
        while loop.time() < stop_at:
            mb = NativeMailbox({"id": "b", "port": port}, mailbox_opts, core)
            await mb.connect()
            await mb.close()
            count += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(parallel)))
    return {"connections_per_s": count / (time.perf_counter() - t0)}


async def run(args, certs, ports):
    """{configuration: {cell: figures}}, each figure the median of ``args.rounds``."""
    rounds = {name: {} for name in CONFIGS}
    cells = (("conc=1", lambda p, o: calls(p, o, 1, args.seconds)),
             ("conc=100", lambda p, o: calls(p, o, 100, args.seconds)),
             ("connect", lambda p, o: connections(p, o, args.seconds)))
    for r in range(args.rounds):
        order = CONFIGS[r % len(CONFIGS):] + CONFIGS[:r % len(CONFIGS)]
        for cell, fn in cells:
            for name in order:
                got = await fn(ports[name], client_opts(name, certs, args.core))
                rounds[name].setdefault(cell, []).append(got)
    return {name: {cell: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
                   for cell, runs in cells_.items()}
            for name, cells_ in rounds.items()}


def print_table(results):
    base = results["plaintext"]
    print(f"{'configuration':<12} {'conc=1 calls/s':>15} {'p50 µs':>8} {'conc=100 calls/s':>17} "
          f"{'p99 µs':>8} {'connections/s':>14}")
    for name, row in results.items():
        c1, c100, conn = row["conc=1"], row["conc=100"], row["connect"]
        print(f"{name:<12} {c1['calls_per_s']:>15,.0f} {c1['p50_us']:>8.0f} "
              f"{c100['calls_per_s']:>17,.0f} {c100['p99_us']:>8.0f} "
              f"{conn['connections_per_s']:>14,.0f}")
    print("\nagainst plaintext (same run): " + "; ".join(
        f"{name}: conc=1 {row['conc=1']['calls_per_s'] / base['conc=1']['calls_per_s']:.2f}x, "
        f"conc=100 {row['conc=100']['calls_per_s'] / base['conc=100']['calls_per_s']:.2f}x, "
        f"connect {row['connect']['connections_per_s'] / base['connect']['connections_per_s']:.2f}x"
        for name, row in results.items() if name != "plaintext"))


def main():
    """Start the servers, measure every cell, print the table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each cell")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; figures are medians")
    parser.add_argument("--core", default=pomelo_rpc.IMPLEMENTATION, help="cython or python")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        certs = make_certs(tmp, "bench")
        token_file = os.path.join(tmp, "token")
        with open(token_file, "w") as f:
            f.write(TOKEN)
        servers = start_servers(certs, token_file, pure=args.core == "python")
        try:
            ports = {name: port for name, (_, port) in servers.items()}
            results = pomelo_rpc.run(run(args, certs, ports))
        finally:
            processes.stop_all([proc for proc, _ in servers.values()])
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        print(f"native transport, {args.core} core, {args.seconds:g} s per cell, payload 10 B, "
              f"median of {args.rounds} rounds")
        print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
