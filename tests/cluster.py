"""Helpers of the cluster tests: start several real server processes, build clients."""

import asyncio
import os
import time

from conftest import REMOTE
from pomelo_rpc import client

AREA_DIR = os.path.join(REMOTE, "area")
AREA_REMOTES = {"user": AREA_DIR}


async def astart_areas(aspawn, count, core="cython", first=0):
    """Start ``area-<first>`` … ``area-<first+count-1>`` at once (``aspawn``: the
    fixture), the loop running on; return them in order."""
    return list(await asyncio.gather(
        *(aspawn(f"area-{i}", "area", AREA_REMOTES, core=core)
          for i in range(first, first + count))))


async def restart(aspawn, proc, core="cython"):
    """Start ``proc``'s server again on the port it had (``aspawn``: the fixture)."""
    return await aspawn(proc.server_id, proc.server_type, AREA_REMOTES, core=core,
                        port=proc.port)


def area_client(core, servers, weights=None, **opts):
    """A client with the area proxies and ``servers`` (optionally with weights by id)."""
    cli = client.create(core=core, **opts)
    cli.add_proxies([{"namespace": "user", "server_type": "area", "path": AREA_DIR}])
    infos = []
    for srv in servers:
        info = dict(srv.info)
        if weights is not None:
            info["weight"] = weights[srv.server_id]
        infos.append(info)
    cli.add_servers(infos)
    return cli


def area_msg(method, *args):
    """An rpc_invoke message for ``user.work.<method>`` on the area servers."""
    return {"namespace": "user", "server_type": "area", "service": "work", "method": method,
            "args": list(args)}


async def server_calls(servers, core="cython"):
    """Calls each of ``servers`` has received, by id, as the servers count them.

    Asked through a client of its own, so the caller's filters and routers see nothing.
    """
    async with area_client(core, servers) as cli:
        stats = await cli.proxies.user.area.work.stats.to_server("*")
    return {sid: s["calls"] for sid, s in stats.items()}


def tally(answers):
    """``{server_id: count}`` of answers carrying a ``server_id``."""
    counts = {}
    for answer in answers:
        counts[answer["server_id"]] = counts.get(answer["server_id"], 0) + 1
    return counts


async def wait_running(cli, sid, count, limit=5.0):
    """Wait until ``count`` calls are in flight to ``sid`` and its server runs them all."""
    stats = cli.proxies.user.area.work.stats
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if cli.in_flight(sid) >= count and (await stats.to_server(sid))["active"] >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{count} calls never got in flight to {sid}")
