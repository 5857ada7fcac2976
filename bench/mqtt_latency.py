"""Sequential call latency over transport="mqtt": Python <-> Python against Node <-> Node.

    python bench/mqtt_latency.py [--calls 2000] [--node-calls 40] [--json]

Node pomelo-rpc 1.0.7 as shipped never sets TCP_NODELAY and writes each MQTT packet
in several pieces, so every sequential call waits for a delayed ACK (40-90 ms);
pomelo_rpc sets TCP_NODELAY and writes each packet at once. The Node peers are
tests/node/{server,client}.js (``npm install`` runs there first if needed). Also
measured: the mixed pairs, where the Node side's stalls remain. Runs in ~10 s.
"""

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pomelo_rpc  # noqa: E402
from pomelo_rpc import client, server  # noqa: E402

NODE_DIR = os.path.join(ROOT, "tests", "node")
REMOTE_TEST = os.path.join(ROOT, "tests", "remote", "test")
MSG = {"namespace": "user", "serverType": "test", "service": "service", "method": "echo"}


def ensure_node():
    """Path of ``node`` with tests/node/node_modules installed (runs ``npm install``)."""
    node = shutil.which("node")
    if node is None:
        raise SystemExit("Node.js is not installed")
    if not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "pomelo-rpc")):
        subprocess.run([shutil.which("npm") or "npm", "install", "--no-audit", "--no-fund"],
                       cwd=NODE_DIR, check=True, timeout=300)
    return node


def summary(samples_ms):
    """avg/p50/p99 (ms) of latency samples."""
    s = sorted(samples_ms)
    return {"calls": len(s), "avg_ms": statistics.fmean(s), "p50_ms": s[len(s) // 2],
            "p99_ms": s[min(len(s) - 1, int(len(s) * 0.99))]}


async def python_client_latency(port, calls):
    """Sequential echo calls from a Python mqtt client to ``port``."""
    cli = client.create(transport="mqtt")
    await cli.start()
    cli.add_servers([{"id": "s", "server_type": "test", "host": "127.0.0.1", "port": port}])
    try:
        await cli.rpc_invoke("s", dict(MSG, args=["warm-up"]))
        samples = []
        for i in range(calls):
            t0 = time.perf_counter()
            await cli.rpc_invoke("s", dict(MSG, args=[i]))
            samples.append((time.perf_counter() - t0) * 1000)
        return summary(samples)
    finally:
        await cli.stop()


async def node_client_latency(node, port, calls):
    """Sequential echo calls from Node pomelo-rpc's client (client.js --bench) to ``port``."""
    proc = await asyncio.create_subprocess_exec(
        node, "client.js", "--port", str(port), "--bench", str(calls), cwd=NODE_DIR,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    report = json.loads(out.decode().strip().splitlines()[-1])
    if "error" in report:
        raise RuntimeError(f"client.js: {report['error']}")
    return {k: report[k] for k in ("calls", "avg_ms", "p50_ms", "p99_ms")}


class NodeServer:
    """Node pomelo-rpc's server (server.js) on an ephemeral loopback port."""

    def __init__(self, node):
        self.proc = subprocess.Popen([node, "server.js"], cwd=NODE_DIR, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        self.port = json.loads(self.proc.stdout.readline())["port"]

    def stop(self):
        """Kill the process."""
        self.proc.kill()
        self.proc.wait(10)


async def run(args):
    """Measure every pair; return ``{pair: summary}``."""
    node = ensure_node()
    rows = {}
    gw = server.create(paths=[{"namespace": "user", "path": REMOTE_TEST}], transport="mqtt")
    await gw.start()
    try:
        rows["python client -> python server"] = await python_client_latency(gw.port, args.calls)
        if not args.no_mixed:
            rows["node client -> python server"] = await node_client_latency(
                node, gw.port, args.mixed_calls)
    finally:
        await gw.stop()
    nsrv = NodeServer(node)
    try:
        rows["node client -> node server"] = await node_client_latency(
            node, nsrv.port, args.node_calls)
        if not args.no_mixed:
            rows["python client -> node server"] = await python_client_latency(
                nsrv.port, args.mixed_calls)
    finally:
        nsrv.stop()
    return rows


def main(argv=None):
    """Entry point: measure, print the table and the Node/Python latency ratio."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=2000, help="Python <-> Python sequential calls")
    p.add_argument("--node-calls", type=int, default=40, help="Node <-> Node sequential calls")
    p.add_argument("--mixed-calls", type=int, default=20, help="calls of each mixed pair")
    p.add_argument("--no-mixed", action="store_true", help="skip the mixed pairs")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    rows = pomelo_rpc.run(run(args))
    py = rows["python client -> python server"]["avg_ms"]
    nd = rows["node client -> node server"]["avg_ms"]
    if args.json:
        print(json.dumps({"implementation": pomelo_rpc.IMPLEMENTATION, "latency": rows,
                          "node_over_python": nd / py}, indent=2))
        return
    print(f"sequential call latency over mqtt (pomelo_rpc core: {pomelo_rpc.IMPLEMENTATION})")
    print(f"{'pair':34} {'calls':>6} {'avg ms':>9} {'p50 ms':>9} {'p99 ms':>9}")
    for name, r in rows.items():
        print(f"{name:34} {r['calls']:>6} {r['avg_ms']:>9.3f} {r['p50_ms']:>9.3f} "
              f"{r['p99_ms']:>9.3f}")
    print(f"Node -> Node is {nd / py:.0f}x slower per sequential call than Python -> Python")


if __name__ == "__main__":
    main()
