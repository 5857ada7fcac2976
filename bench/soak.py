"""Soak: a few minutes of load against a real server process, printing memory over time.

    python bench/soak.py                 # 180 s, cython core
    python bench/soak.py --seconds 600 --core python

A client process (this one) keeps ``--concurrency`` calls in flight: mostly echo,
some slow calls that time out, some abandoned by their caller; a side task opens and
drops raw connections (some with half a frame, some with garbage). Every
``--every`` seconds it prints the RSS of the server and of the client, the calls
done and the client's request-table size. At the end it compares the RSS at one
third of the run (after warm-up) with the RSS at the end, and exits 1 if either
process grew by more than ``--max-growth-mb``, or if the request table, its
deadline slots or its timer did not drain.
"""

import argparse
import asyncio
import json
import os
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import msgpack  # noqa: E402

import pomelo_rpc  # noqa: E402
from pomelo_rpc import RpcError, client, sustained  # noqa: E402

REMOTE = os.path.join(ROOT, "tests", "remote", "test")


def start_server(core):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               POMELO_RPC_PURE="1" if core == "python" else "0")
    proc = subprocess.Popen([sys.executable, "-m", "pomelo_rpc", "serve", "--server-id", "soak",
                             "--server-type", "test", "--remote", f"user={REMOTE}"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    info = json.loads(proc.stdout.readline())
    return proc, info["port"]


async def churn(port, stop):
    """Open and drop raw connections, rudely, for the whole run."""
    body = msgpack.packb([2, 1, "user", "service", "echo", ["x" * 100]])
    half = (struct.pack(">I", len(body)) + body)[:40]
    i = 0
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            if i % 3 == 1:
                writer.write(half)
            elif i % 3 == 2:
                writer.write(b"\x00\x00\x00\x03\xc1\xc1\xc1")
            writer.close()
        except OSError:
            pass
        i += 1
        await asyncio.sleep(0.01)
    return i


async def main(args):
    proc, port = start_server(args.core)
    cli = client.create(core=args.core, timeout=2)
    cli.add_proxies([{"namespace": "user", "server_type": "test", "path": REMOTE}])
    cli.add_servers([{"id": "soak", "server_type": "test", "host": "127.0.0.1", "port": port}])
    await cli.start()
    svc = cli.proxies.user.test.service
    stop = asyncio.Event()
    done = {"ok": 0, "timeout": 0, "abandoned": 0, "error": 0}

    async def worker(w):
        i = 0
        while not stop.is_set():
            kind = (w + i) % 100
            try:
                if kind == 0:
                    await svc.slow_echo(None, i, 0.05, timeout=0.01)
                elif kind == 1:
                    await asyncio.wait_for(svc.slow_echo(None, i, 0.05), 0.005)
                else:
                    await svc.echo(None, {"w": w, "i": i, "pad": "p" * (i % 512)})
                done["ok"] += 1
            except asyncio.TimeoutError:
                done["abandoned" if kind == 1 else "timeout"] += 1
            except RpcError:
                done["timeout" if kind == 0 else "error"] += 1
            i += 1

    workers = [asyncio.ensure_future(worker(w)) for w in range(args.concurrency)]
    churner = asyncio.ensure_future(churn(port, stop))
    print(f"soak: {args.seconds:g}s, {args.core} core, {args.concurrency} calls in flight")

    try:
        report = await sustained.sample_while(lambda: sum(done.values()), cli, "soak", proc.pid,
                                              args.seconds, args.every, sys.stdout)
    finally:
        stop.set()
        await asyncio.gather(*workers, return_exceptions=True)
        conns = await churner
    alive = proc.poll() is None
    await asyncio.sleep(2.5)        # every deadline passes
    mailbox = cli._station.mailboxes.get("soak")
    table_ok = mailbox is not None and len(mailbox.protocol.table) == 0 \
        and mailbox.protocol.table.slot_count == 0 and mailbox.protocol.deadlines.handle is None
    await cli.stop()
    proc.terminate()
    proc.wait(10)
    print(f"calls: {done}; raw connections dropped: {conns}")
    sustained.summary(report, sys.stdout)
    status = 0
    if not alive:
        print("FAIL: the server process died")
        status = 1
    if done["error"]:
        print(f"FAIL: {done['error']} calls failed with an unexpected error")
        status = 1
    if not table_ok:
        print("FAIL: the request table, its deadline slots or its timer did not drain")
        status = 1
    for failure in report.failures(args.min_ratio, args.max_growth_mb):
        print(f"FAIL: {failure}")
        status = 1
    return status


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--every", type=float, default=10)
    parser.add_argument("--core", choices=("cython", "python"), default="cython")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--max-growth-mb", type=float, default=sustained.MAX_GROWTH_MB)
    parser.add_argument("--min-ratio", type=float, default=sustained.MIN_RATIO,
                        help="fail when the last interval's calls/s is under this share of the best")
    sys.exit(pomelo_rpc.run(main(parser.parse_args())))
