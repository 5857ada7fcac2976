"""Client memory with 10,000 calls in flight, against idle (issue target: < 20 MB more).

    python bench/memory_in_flight.py [--calls 10000] [--core cython|python]

The server (its own process) holds every call for a few seconds (an async method
that sleeps), so all of them are in flight at once; the client's RSS is read from
/proc before the calls, with them all in flight, and after they are answered.
"""

import argparse
import asyncio
import gc
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import pomelo_rpc  # noqa: E402
from pomelo_rpc import client  # noqa: E402
from conftest import REMOTE, ServerProcess  # noqa: E402


def rss_mb():
    """This process's resident memory in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def main(args):
    srv = ServerProcess("mem-1", "test", {"user": os.path.join(REMOTE, "test")},
                        core=args.core).start()
    try:
        cli = client.create(core=args.core, timeout=60, pending_size=args.calls)
        cli.add_proxies([{"namespace": "user", "server_type": "test",
                          "path": os.path.join(REMOTE, "test")}])
        cli.add_servers([srv.info])
        await cli.start()
        slow = cli.proxies.user.test.service.slow_echo
        assert await slow(None, "warm", 0) == "warm"
        gc.collect()
        idle = rss_mb()
        calls = [asyncio.ensure_future(slow(None, {"i": i, "b": "x" * 10}, args.hold))
                 for i in range(args.calls)]
        while cli.in_flight("mem-1") < args.calls:
            await asyncio.sleep(0.05)
        gc.collect()
        busy = rss_mb()
        results = await asyncio.gather(*calls)
        assert len(results) == args.calls and results[-1]["i"] == args.calls - 1
        gc.collect()
        after = rss_mb()
        await cli.stop()
    finally:
        srv.kill()
    print(f"{args.calls} calls in flight ({args.core} core): idle {idle:.1f} MB, "
          f"in flight {busy:.1f} MB (+{busy - idle:.1f} MB), after {after:.1f} MB; "
          f"target < +20 MB: {'met' if busy - idle < 20 else 'NOT met'}")
    return 0 if busy - idle < 20 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10000)
    parser.add_argument("--hold", type=float, default=3.0, help="seconds the server holds each call")
    parser.add_argument("--core", default=pomelo_rpc.IMPLEMENTATION)
    sys.exit(pomelo_rpc.run(main(parser.parse_args())))
