"""Backend servers: players through a Node pomelo connector to a Python area server,
against the same app with a Node area server.

    python bench/backend.py [--rounds 3] [--seconds 5] [--players 1,100] [--json]
                            [--pinus mqtt|pinus-tcp] [--areas node,python,python-batch]
                            [--connectors stock,nodelay] [--coalesce 0.001]

Each cell runs a pomelo 2.2.7 app (``pomelo_rpc.pomelo_app``: a master and one
hybridconnector over WebSocket) with one area server: the Node one
(``tests/node/pomelo_app/app/servers/area/handler/playerHandler.js``) or a Python one
(``python -m pomelo_rpc serve --handlers pomelo_rpc/demo_backend/area/handler``, same
``move``; ``python-batch``: the same with ``--sched-batch``, its loop's thread under
SCHED_BATCH; ``python-coalesce``: with ``--read-coalesce`` (``--coalesce`` s, its reads
held while requests come fast, to read several per wake-up); ``python-batch-coalesce``:
with both), with the connector as shipped (``stock``) or with TCP_NODELAY patched into
every Node socket (``nodelay``). Players (pomelo-client-websocket, one Node process)
each send ``area.playerHandler.move`` one after the other; every 10th asks for an
``onMove`` push back. Printed per cell, medians of ``--rounds`` rounds whose cells run
in alternating order: requests/s, p50/p99 latency (ms), pushes/s, and the CPU each
process spent per request (µs, from /proc/<pid>/stat over the load); then the area's
CPU split into user and system time and its wake-ups (voluntary context switches: it
slept in epoll and was woken) per request.

``--pinus mqtt`` (or ``pinus-tcp``): the same with a pinus 1.7.4 app instead
(``PinusApp``, tests/pinus/pinus_app, its Node area the same ``move``) on that rpc
transport; pinus-rpc sets TCP_NODELAY itself, so there are no ``nodelay`` cells.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import pomelo_rpc  # noqa: E402
from pomelo_rpc.pomelo_app import PINUS_DIR, PinusApp, PomeloApp, Players, node_missing  # noqa: E402
from pomelo_rpc.processes import child_env  # noqa: E402
from pomelo_rpc.stubs import write_stubs  # noqa: E402

HANDLERS = os.path.join(os.path.dirname(HERE), "pomelo_rpc", "demo_backend", "area", "handler")
TICK = os.sysconf("SC_CLK_TCK")
ROUTE = "area.playerHandler.move"
PUSH_EVERY = 10
#: the targets of issue 21
CPU_TARGET = 0.3         # Python area's CPU per request <= 0.3 x the Node area's
RATE_TARGET = 1.0        # the cluster with it carries >= the requests/s of the Node one


def print_table(medians: dict, counts: list, columns: list, cells) -> None:
    """A Markdown table of ``medians`` (``"<area> <connector>"`` -> players -> columns):
    a row per cell and player count, ``cells(medians)`` its ``columns``."""
    print("| connector | area | players | " + " | ".join(columns) + " |")
    print("|---" * (3 + len(columns)) + "|")
    for key, by_count in medians.items():
        area, conn = key.split()
        for c in counts:
            print(f"| {conn} | {area} | {c} | {cells(by_count[c])} |")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used."""
    user, system = user_system(pid)
    return user + system


def user_system(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds process ``pid`` has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def wakeups(pid: int) -> int:
    """The voluntary context switches of process ``pid``'s threads: each a sleep (in
    epoll, mostly) it was woken from."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches"):
                        total += int(line.split(":")[1])
        except FileNotFoundError:     # a thread that ended meanwhile
            pass
    return total


async def python_area(app: PomeloApp, sid: str, core: str, batch: bool = False,
                      coalesce: float = 0.0) -> subprocess.Popen[str]:
    """A Python area server process joining ``app`` (``batch``: ``--sched-batch``;
    ``coalesce``: ``--read-coalesce``); returned once registered."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pomelo_rpc", "serve", "--transport", app.transport, "--server-id",
         sid, "--server-type", "area", "--handlers", HANDLERS, "--registry", app.url("area")]
        + (["--sched-batch"] if batch else [])
        + (["--read-coalesce", str(coalesce)] if coalesce else []),
        stdout=subprocess.PIPE, text=True, env=child_env(pure=core == "python"))
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, proc.stdout.readline)  # type: ignore[union-attr]
    if not line:
        raise RuntimeError("the Python area server did not start")
    return proc


def make_app(area: str, sid: str, nodelay: bool, pinus: str | None, stubs: str) -> PomeloApp:
    """The pomelo app (or, with ``pinus``, the pinus one on that transport) of a cell."""
    areas = [sid] if area == "node" else []
    if pinus:
        return PinusApp(connectors=["connector-1"], areas=areas, transport=pinus, stubs=stubs)
    return PomeloApp(connectors=["connector-1"], areas=areas, nodelay=nodelay)


async def cell(area: str, nodelay: bool, player_counts: list[int], seconds: float,
               core: str, pinus: str | None = None, stubs: str = "",
               coalesce: float = 0.001) -> dict[int, dict[str, float]]:
    """One app with one area server (``node``, ``python``, ``python-batch``,
    ``python-coalesce`` or ``python-batch-coalesce``): a load per player count."""
    sid = "area-node-1" if area == "node" else "area-py-1"
    app = make_app(area, sid, nodelay, pinus, stubs)
    await app.start()
    proc = None
    players = None
    try:
        if area != "node":
            proc = await python_area(app, sid, core, "batch" in area,
                                     coalesce if "coalesce" in area else 0.0)
            area_pid = proc.pid
        else:
            area_pid = app.pid(sid)
        players = await Players().start()
        assert players.proc is not None
        pids = {"connector": app.pid("connector-1"), "area": area_pid,
                "players": players.proc.pid}
        # the connector must know the area server before the players come
        await players.connect("probe", app.client_ports["connector-1"])
        await players.request("probe", "connector.entryHandler.entry", {"uid": "probe"})
        deadline = time.monotonic() + 10
        while (await players.request("probe", ROUTE, {"x": 0, "y": 0})).get("code") != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the connector never reached {sid}")
            await asyncio.sleep(0.05)
        players.close("probe")
        out = {}
        for count in player_counts:
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            area_before = user_system(area_pid), wakeups(area_pid)
            result = await players.load(app.client_ports["connector-1"], count, seconds,
                                        ROUTE, {"x": 1, "y": 2}, {}, PUSH_EVERY)
            after = {name: cpu_seconds(pid) for name, pid in pids.items()}
            area_after = user_system(area_pid), wakeups(area_pid)
            n = max(1, result["requests"])
            row = {"rps": result["requests"] / result["seconds"], "p50": result["p50"],
                   "p99": result["p99"], "pushes": result["pushes"] / result["seconds"],
                   "errors": result["errors"]}
            for name in pids:
                row[f"cpu_{name}"] = (after[name] - before[name]) / n * 1e6
            row["area_user"] = (area_after[0][0] - area_before[0][0]) / n * 1e6
            row["area_sys"] = (area_after[0][1] - area_before[0][1]) / n * 1e6
            row["area_wakeups"] = (area_after[1] - area_before[1]) / n
            out[count] = row
        return out
    finally:
        if players is not None:
            await players.stop()
        if proc is not None:
            proc.terminate()
            proc.wait(15)
        app.stop()


AREAS = ["node", "python", "python-batch", "python-coalesce", "python-batch-coalesce"]
CONFIGS = [(area, nodelay) for nodelay in (False, True) for area in AREAS]
COLUMNS = ["rps", "p50", "p99", "pushes", "cpu_connector", "cpu_area", "cpu_players",
           "area_user", "area_sys", "area_wakeups"]


async def run(args: argparse.Namespace) -> dict[str, dict[int, dict[str, float]]]:
    counts = [int(c) for c in args.players.split(",")]
    areas = args.areas.split(",")
    connectors = args.connectors.split(",")
    configs = [c for c in CONFIGS if not (args.pinus and c[1]) and c[0] in areas
               and ("nodelay" if c[1] else "stock") in connectors]
    stubs = tempfile.mkdtemp(prefix="bench_backend_stubs_")
    write_stubs([], stubs, backend=True)     # the Python area's sys/msgRemote.js (pinus)
    rounds: dict[tuple[str, bool], list[dict[int, dict[str, float]]]] = {c: [] for c in configs}
    try:
        for r in range(args.rounds):
            order = configs if r % 2 == 0 else configs[::-1]
            for area, nodelay in order:
                res = await cell(area, nodelay, counts, args.seconds, args.core, args.pinus,
                                 stubs, args.coalesce)
                rounds[(area, nodelay)].append(res)
                if not args.json:
                    print(f"  round {r + 1}: {area:21} {'nodelay' if nodelay else 'stock':7} "
                          + "  ".join(f"{c} players {res[c]['rps']:.0f}/s p50 "
                                      f"{res[c]['p50']:.2f} ms" for c in counts), flush=True)
    finally:
        shutil.rmtree(stubs, ignore_errors=True)
    medians: dict[str, dict[int, dict[str, float]]] = {}
    for (area, nodelay), results in rounds.items():
        key = f"{area} {'nodelay' if nodelay else 'stock'}"
        medians[key] = {c: {col: statistics.median(res[c][col] for res in results)
                            for col in COLUMNS + ["errors"]} for c in counts}
    return medians


def report(medians: dict[str, dict[int, dict[str, float]]], args: argparse.Namespace) -> None:
    counts = [int(c) for c in args.players.split(",")]
    print(f"\nmedians of {args.rounds} rounds, {args.seconds:g} s per load, every "
          f"{PUSH_EVERY}th request pushes; load average {os.getloadavg()[0]:.2f}; "
          f"Python area on the {args.core} core; "
          + (f"pinus 1.7.4, rpc over {args.pinus}" if args.pinus else "pomelo 2.2.7"))
    print_table(medians, counts, ["requests/s", "p50 ms", "p99 ms", "pushes/s",
                                  "CPU µs/request: connector", "area", "players"],
                lambda m: f"{m['rps']:,.0f} | {m['p50']:.2f} | {m['p99']:.2f} | "
                          f"{m['pushes']:,.0f} | {m['cpu_connector']:.0f} | "
                          f"{m['cpu_area']:.1f} | {m['cpu_players']:.0f}")
    print("\nthe area's CPU per request, user and system (µs), and its wake-ups per request")
    print_table(medians, counts, ["user µs", "system µs", "wake-ups"],
                lambda m: f"{m['area_user']:.1f} | {m['area_sys']:.1f} | "
                          f"{m['area_wakeups']:.2f}")
    for conn in ("stock", "nodelay"):
        for python in AREAS[1:]:
            if f"node {conn}" not in medians or f"{python} {conn}" not in medians:
                continue
            node, py = medians[f"node {conn}"], medians[f"{python} {conn}"]
            big = counts[-1]
            cpu = py[big]["cpu_area"] / node[big]["cpu_area"]
            rate = py[big]["rps"] / node[big]["rps"]
            print(f"{conn} connector, {big} players: {python} area CPU per request "
                  f"{cpu:.2f}x the Node area's (target <= {CPU_TARGET}: "
                  f"{'met' if cpu <= CPU_TARGET else 'NOT met'}); requests/s {rate:.2f}x "
                  f"(target >= {RATE_TARGET}: {'met' if rate >= RATE_TARGET else 'NOT met'})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each load")
    parser.add_argument("--players", default="1,100",
                        help="comma-separated player counts, each a load of its own")
    parser.add_argument("--areas", default="node,python,python-batch,python-coalesce",
                        help="comma-separated area servers to compare: node, python, "
                             "python-batch (python under --sched-batch), python-coalesce "
                             "(python with --read-coalesce), python-batch-coalesce (both)")
    parser.add_argument("--connectors", default="stock,nodelay",
                        help="comma-separated connectors: stock, nodelay (TCP_NODELAY "
                             "patched into every Node socket)")
    parser.add_argument("--coalesce", type=float, default=0.001,
                        help="the --read-coalesce window of the *-coalesce areas (s)")
    parser.add_argument("--core", default=pomelo_rpc.IMPLEMENTATION,
                        help="the Python area server's core")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--pinus", choices=["mqtt", "pinus-tcp"],
                        help="a pinus 1.7.4 app on this rpc transport instead of pomelo's")
    args = parser.parse_args()
    missing = node_missing() or (node_missing(PINUS_DIR, PinusApp.packages)
                                 if args.pinus else None)
    if missing is not None:
        print(f"bench/backend.py needs Node: {missing}", file=sys.stderr)
        return 1
    medians = pomelo_rpc.run(run(args))
    if args.json:
        print(json.dumps(medians, indent=1))
    else:
        report(medians, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
