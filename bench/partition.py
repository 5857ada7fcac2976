"""One server cut off under load: what a client sees, second by second (docs/liveness.md).

    python bench/partition.py                        # as root: 4 servers, 100 in flight,
                                                     # rr + failover, area-3 cut off 20 s
    python bench/partition.py --mode freeze          # SIGSTOP instead (no namespace needed)
    python bench/partition.py --liveness-timeout 0 --keepalive 0 --tcp-user-timeout 0
                                                     # the client without liveness checks

The servers (``python -m pomelo_rpc serve``) and this client run in a private network
namespace (``pomelo_rpc.partition``); after ``--before`` s, nftables drops every packet
of one server's port (``--direction both``, or only those ``to`` or ``from`` it; no RST)
for ``--cut`` s, then lets them through again, and the run goes on for ``--after`` s.
``--concurrency`` workers call ``work.echo`` through the router without pause, with
the client's defaults unless told otherwise.

Every second: calls answered, failed (by error), answered by the server cut off, the
longest call, and whether the client takes that server as available. Then a summary
with the targets: calls/s while it is cut off >= 0.6x before (the ideal, 3 of 4
servers, is 0.75x), at most 300 calls failed meanwhile, back in rotation <= 5 s after
the heal, and no call longer than its timeout.
"""

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from pomelo_rpc import RpcTimeoutError, client  # noqa: E402
from pomelo_rpc.partition import Namespace, available  # noqa: E402
from pomelo_rpc.processes import child_env, stop_all  # noqa: E402

AREA = os.path.join(ROOT, "tests", "remote", "area")

TARGET_RATIO = 0.6
TARGET_FAILED = 300
TARGET_BACK = 5.0


def start_servers(ns, count, core, transport):
    """``area-0`` … in the namespace (``ip netns exec``), or here without one."""
    procs, infos = [], []
    for i in range(count):
        cmd = [sys.executable, "-m", "pomelo_rpc", "serve", "--server-id", f"area-{i}",
               "--server-type", "area", "--transport", transport, "--remote", f"user={AREA}"]
        if ns is not None:
            cmd = ["ip", "netns", "exec", ns.name] + cmd
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True,
                                env=child_env(pure=core == "python"))
        line = proc.stdout.readline()
        if not line:
            stop_all(procs + [proc])
            raise SystemExit(f"area-{i} did not start")
        procs.append(proc)
        infos.append({"id": f"area-{i}", "server_type": "area", "host": "127.0.0.1",
                      "port": json.loads(line)["port"]})
    return procs, infos


class Seconds:
    """Calls by the second they ended in: answered, failed by error, by the victim."""

    def __init__(self, start):
        self.start = start
        self.rows = {}

    def row(self, t):
        return self.rows.setdefault(int(t - self.start), {
            "ok": 0, "failed": {}, "victim": 0, "longest": 0.0, "down": False})

    def add(self, t0, t1, outcome, victim):
        row = self.row(t1)
        row["longest"] = max(row["longest"], t1 - t0)
        if isinstance(outcome, Exception):
            name = type(outcome).__name__
            row["failed"][name] = row["failed"].get(name, 0) + 1
        else:
            row["ok"] += 1
            if outcome == victim:
                row["victim"] += 1


async def scenario(args, ns, infos, procs):
    opts = {"router_type": args.router, "fail_mode": args.fail_mode, "core": args.core,
            "transport": args.transport}
    for name in ("timeout", "keepalive", "liveness_interval", "liveness_timeout",
                 "tcp_user_timeout"):
        value = getattr(args, name)
        if value is not None:
            opts[name] = value
    cli = client.create(**opts)
    cli.add_proxies([{"namespace": "user", "server_type": "area", "path": AREA}])
    cli.add_servers(infos)
    await cli.start()
    victim = infos[-1]
    echo = cli.proxies.user.area.work.echo
    start = time.monotonic()
    seconds = Seconds(start)
    timeout = cli.opts["timeout"]
    longest = [0.0]
    timeouts = [0]
    end = start + args.before + args.cut + args.after
    cut_at = start + args.before
    heal_at = cut_at + args.cut
    first_back = [None]          # the first answer from the victim after the heal
    stop = False

    async def worker(w):
        i = 0
        while not stop:
            t0 = time.monotonic()
            try:
                outcome = (await echo(None, i))["server_id"]
            except Exception as exc:  # noqa: BLE001 - counted
                outcome = exc
                if isinstance(exc, RpcTimeoutError):
                    timeouts[0] += 1
                await asyncio.sleep(0.005)
            t1 = time.monotonic()
            if outcome == victim["id"] and t1 >= heal_at and first_back[0] is None:
                first_back[0] = t1 - heal_at
            longest[0] = max(longest[0], t1 - t0)
            seconds.add(t0, t1, outcome, victim["id"])
            i += 1

    workers = [asyncio.ensure_future(worker(w)) for w in range(args.concurrency)]
    cut = healed = False
    detected = None
    print(f"{'t':>4} {'ok':>8} {'failed':>7} {'by ' + victim['id']:>10} {'longest':>8}  "
          f"{victim['id']} available   failed by error")
    shown = 0
    while time.monotonic() < end:
        await asyncio.sleep(0.01)
        now = time.monotonic()
        if not cut and now >= cut_at:
            cut = True
            if args.mode == "freeze":
                os.kill(procs[-1].pid, signal.SIGSTOP)
            else:
                await ns.acut(victim["port"], args.direction)
        if cut and not healed and now >= heal_at:
            healed = True
            if args.mode == "freeze":
                os.kill(procs[-1].pid, signal.SIGCONT)
            else:
                await ns.aheal()
        available_now = cli.server_state(victim["id"])["available"]
        seconds.row(now)["down"] |= not available_now
        if cut and detected is None and not available_now:
            detected = now - cut_at
        while int(now - start) > shown:
            row = seconds.rows.get(shown, {"ok": 0, "failed": {}, "victim": 0,
                                           "longest": 0.0, "down": False})
            failed = sum(row["failed"].values())
            errors = ", ".join(f"{k} {v}" for k, v in sorted(row["failed"].items()))
            print(f"{shown:>4} {row['ok']:>8} {failed:>7} {row['victim']:>10} "
                  f"{row['longest']:>7.2f}s  {'no' if row['down'] else 'yes':>13}   {errors}")
            shown += 1
    stop = True
    await asyncio.gather(*workers)
    await cli.stop()
    back = first_back[0]
    return seconds, start, cut_at, heal_at, detected, back, longest[0], timeouts[0], timeout


def summary(args, result):
    seconds, start, cut_at, heal_at, detected, back, longest, timeouts, timeout = result

    def window(a, b):
        rows = [r for t, r in seconds.rows.items() if a <= start + t and start + t + 1 <= b]
        ok = sum(r["ok"] for r in rows)
        failed = sum(sum(r["failed"].values()) for r in rows)
        return ok / max(len(rows), 1), failed

    before, _ = window(start + 1, cut_at)            # the first second warms up
    during, failed = window(cut_at, heal_at)
    ratio = during / before if before else 0.0
    print()
    print(f"before: {before:,.0f} calls/s; while {args.mode == 'freeze' and 'frozen' or 'cut off'}: "
          f"{during:,.0f} calls/s = {ratio:.2f}x (target >= {TARGET_RATIO}x, ideal "
          f"{(args.servers - 1) / args.servers:.2f}x) {'met' if ratio >= TARGET_RATIO else 'MISSED'}")
    print(f"failed while cut off: {failed} (target <= {TARGET_FAILED}) "
          f"{'met' if failed <= TARGET_FAILED else 'MISSED'}")
    print(f"declared down {detected:.2f} s after the cut" if detected is not None
          else "never declared down")
    if back is not None:
        print(f"back in rotation {back:.2f} s after the heal (target <= {TARGET_BACK:g} s)"
              f" {'met' if back <= TARGET_BACK else 'MISSED'}")
    else:
        print("never back in rotation")
    print(f"longest call {longest:.2f} s, timeouts {timeouts} (call timeout {timeout:g} s): "
          f"{'nothing waited past its deadline' if longest <= timeout + 0.1 else 'MISSED'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--before", type=float, default=5.0)
    parser.add_argument("--cut", type=float, default=20.0)
    parser.add_argument("--after", type=float, default=10.0)
    parser.add_argument("--mode", choices=("partition", "freeze"), default="partition")
    parser.add_argument("--direction", choices=("both", "to", "from"), default="both")
    parser.add_argument("--core", choices=("cython", "python"), default="cython")
    parser.add_argument("--transport", choices=("native", "mqtt"), default="native")
    parser.add_argument("--router", default="rr")
    parser.add_argument("--fail-mode", default="failover")
    parser.add_argument("--timeout", type=float)
    parser.add_argument("--keepalive", type=float)
    parser.add_argument("--liveness-interval", type=float)
    parser.add_argument("--liveness-timeout", type=float)
    parser.add_argument("--tcp-user-timeout", type=float)
    args = parser.parse_args()
    ns = None
    if args.mode == "partition":
        why = available()
        if why is not None:
            raise SystemExit(f"partition mode {why}; try --mode freeze")
        ns = Namespace()
        ns.create()
    procs = []
    try:
        procs, infos = start_servers(ns, args.servers, args.core, args.transport)
        print(f"{args.servers} servers ({args.core} core, {args.transport}), "
              f"{args.concurrency} calls in flight, {args.router} + {args.fail_mode}; "
              f"{infos[-1]['id']} {'frozen' if args.mode == 'freeze' else 'cut off ' + args.direction}"
              f" at t={args.before:g} s for {args.cut:g} s")
        if ns is not None:
            result = ns.run(lambda ns: scenario(args, ns, infos, procs))
        else:
            import pomelo_rpc
            result = pomelo_rpc.run(scenario(args, None, infos, procs))
        summary(args, result)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
        stop_all(procs)
        if ns is not None:
            ns.close()


if __name__ == "__main__":
    main()
