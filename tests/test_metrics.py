"""metrics=True: what Prometheus scrapes, after known traffic, parsed with
prometheus_client's own parser.

A real ``serve --metrics-port 0`` process is scraped over HTTP; the client's metrics
live in a CollectorRegistry of the test. Then metrics and tracing on under hostile
input: the server keeps serving and garbage never becomes a label or a span name.
"""

import asyncio
import json
import os
import random
import string
import time
import struct
import sys
import urllib.request

import msgpack
import pytest

from conftest import REMOTE, ROOT, wait_available
from pomelo_rpc import ConnectionLostError, RemoteError, RpcTimeoutError, client, server
from pomelo_rpc import core as core_pkg

import prometheus_client
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

TEST_DIR = os.path.join(REMOTE, "test")


# helpers ---------------------------------------------------------------------

async def start_server(core, port=0, transport="native"):
    """A real ``serve`` process with ``--metrics-port 0``: (process, listening line)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["POMELO_RPC_PURE"] = "1" if core == "python" else "0"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pomelo_rpc", "serve", "--server-id", "srv-1",
        "--server-type", "test", "--port", str(port), "--transport", transport,
        "--remote", f"user={TEST_DIR}", "--metrics-port", "0",
        stdout=asyncio.subprocess.PIPE, env=env)
    line = await asyncio.wait_for(proc.stdout.readline(), 20)
    info = json.loads(line)
    assert info["implementation"] == core
    return proc, info


async def kill(proc):
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


def samples(text):
    """``{(sample name, ((label, value), ...)): value}`` of an exposition text."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def scrape(port):
    """The samples of ``http://127.0.0.1:<port>/metrics``."""
    url = f"http://127.0.0.1:{port}/metrics"
    loop = asyncio.get_running_loop()
    text = await loop.run_in_executor(
        None, lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    return samples(text)


def calls(found, side, route, outcome, server="srv-1"):
    return found.get((f"pomelo_rpc_{side}_calls_total",
                      (("outcome", outcome), ("route", route), ("server", server))), 0)


def hist_count(found, side, route, server="srv-1"):
    return found.get((f"pomelo_rpc_{side}_call_duration_seconds_count",
                      (("route", route), ("server", server))), 0)


def gauge(found, name, server="srv-1"):
    return found.get((name, (("server", server),)), 0)


def routes_of(found, side):
    return {dict(labels)["route"] for name, labels in found
            if name == f"pomelo_rpc_{side}_calls_total"}


def unknown_msg(name):
    return {"namespace": "user", "server_type": "test", "service": name, "method": name,
            "args": []}


async def wait_for(predicate, limit=10.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while True:
        value = await predicate()
        if value or loop.time() > deadline:
            return value
        await asyncio.sleep(0.05)


# a real server process, scraped ---------------------------------------------

async def test_scrape_after_known_traffic(core):
    """N ok, M failed, K timed out, U unknown routes, then L lost with the connection:
    exactly those counts on both sides, every call in the histograms, bytes equal."""
    proc, info = await start_server(core)
    registry = CollectorRegistry()
    cli = client.create(core=core, metrics=True, metrics_registry=registry, timeout=5)
    cli.add_proxies([{"namespace": "user", "server_type": "test", "path": TEST_DIR}])
    cli.add_servers([{"id": "srv-1", "server_type": "test", "port": info["port"]}])
    await cli.start()
    svc = cli.proxies.user.test.service
    n, m, k, u, w, lost = 30, 7, 4, 200, 3, 5
    try:
        for i in range(n):
            assert await svc.echo.to_server("srv-1", i) == i
        for i in range(m):
            with pytest.raises(RemoteError):
                await svc.fail.to_server("srv-1", f"boom {i}")
        timed_out = await asyncio.gather(
            *(cli.rpc_invoke("srv-1", {"namespace": "user", "server_type": "test",
                                       "service": "service", "method": "slow_echo",
                                       "args": [i, 0.6]}, timeout=0.1) for i in range(k)),
            return_exceptions=True)
        assert all(isinstance(e, RpcTimeoutError) for e in timed_out), timed_out
        rng = random.Random(16)
        for _ in range(u):   # a client sending many unknown routes
            name = "".join(rng.choices(string.ascii_letters, k=12))
            with pytest.raises(RemoteError, match="unknown service"):
                await cli.rpc_invoke("srv-1", unknown_msg(name))
        for _ in range(w):   # a known route with the wrong argument count: not dispatched
            with pytest.raises(RemoteError, match="argument"):
                await svc.add.to_server("srv-1", 1, 2, 3)

        # the server cuts the K slow calls at their deadline: expired there
        async def settled():
            found = await scrape(info["metrics_port"])
            return (found if calls(found, "server", "user.service.slow_echo", "expired") == k
                    else None)
        found = await wait_for(settled)
        assert found, "the slow calls never finished on the server"
        mine = samples(generate_latest(registry).decode())
        for side, slow_outcome in (("server", "expired"), ("client", "timeout")):
            got = found if side == "server" else mine
            assert calls(got, side, "user.service.echo", "ok") == n
            assert calls(got, side, "user.service.fail", "error") == m
            assert calls(got, side, "user.service.slow_echo", slow_outcome) == k
            assert calls(got, side, "unknown", "error") == u + w
            # every outcome is a series from the first call, the reserved ones at zero
            for outcome in ("busy", "expired", "connection_lost"):
                assert (("pomelo_rpc_%s_calls_total" % side,
                         (("outcome", outcome), ("route", "user.service.echo"),
                          ("server", "srv-1"))) in got)
                assert calls(got, side, "user.service.echo", outcome) == 0
            # garbage names never became labels
            assert routes_of(got, side) == {"user.service.echo", "user.service.fail",
                                            "user.service.slow_echo", "unknown"}
            for route, count in (("user.service.echo", n), ("user.service.fail", m),
                                 ("user.service.slow_echo", k), ("unknown", u + w)):
                assert hist_count(got, side, route) == count
            assert gauge(got, f"pomelo_rpc_{side}_connections") == 1
            assert gauge(got, f"pomelo_rpc_{side}_calls_in_flight") == 0
        # an echo is sub-millisecond on loopback: the small buckets see it
        assert found[("pomelo_rpc_server_call_duration_seconds_bucket",
                      (("le", "0.001"), ("route", "user.service.echo"),
                       ("server", "srv-1")))] == n
        # what one side wrote, the other read
        assert mine[("pomelo_rpc_client_sent_bytes_total", (("server", "srv-1"),))] == \
            found[("pomelo_rpc_server_received_bytes_total", (("server", "srv-1"),))] > 0
        assert mine[("pomelo_rpc_client_received_bytes_total", (("server", "srv-1"),))] == \
            found[("pomelo_rpc_server_sent_bytes_total", (("server", "srv-1"),))] > 0

        # L calls in flight when the server dies: connection_lost, then a reconnect
        held = [asyncio.ensure_future(svc.slow_echo.to_server("srv-1", i, 30))
                for i in range(lost)]

        async def running():
            found = await scrape(info["metrics_port"])
            return gauge(found, "pomelo_rpc_server_calls_in_flight") == lost
        assert await wait_for(running)
        await kill(proc)
        outcomes = await asyncio.gather(*held, return_exceptions=True)
        assert all(isinstance(e, ConnectionLostError) for e in outcomes), outcomes
        # the server is down for the client (docs/liveness.md), and says so
        mine = samples(generate_latest(registry).decode())
        assert gauge(mine, "pomelo_rpc_client_server_available") == 0
        down_at = mine[("pomelo_rpc_client_server_availability_changed_timestamp_seconds",
                        (("server", "srv-1"),))]
        assert abs(down_at - time.time()) < 10
        proc, info = await start_server(core, port=info["port"])
        await wait_available(cli, "srv-1")
        assert await svc.echo.to_server("srv-1", "back") == "back"
        mine = samples(generate_latest(registry).decode())
        assert gauge(mine, "pomelo_rpc_client_server_available") == 1
        assert mine[("pomelo_rpc_client_server_availability_changed_timestamp_seconds",
                     (("server", "srv-1"),))] >= down_at
        assert calls(mine, "client", "user.service.slow_echo", "connection_lost") == lost
        assert mine[("pomelo_rpc_client_reconnects_total", (("server", "srv-1"),))] == 1
        assert gauge(mine, "pomelo_rpc_client_connections") == 1
        assert calls(mine, "client", "user.service.echo", "ok") == n + 1
    finally:
        await cli.stop()
        await kill(proc)


async def test_mqtt_metrics_both_sides(core):
    """The mqtt transport counts the same way (in-process gateway, real sockets)."""
    server_registry, client_registry = CollectorRegistry(), CollectorRegistry()
    gw = server.create(paths=[{"namespace": "user", "path": TEST_DIR}], core=core,
                       transport="mqtt", context={"server_id": "srv-1"}, metrics=True,
                       metrics_registry=server_registry)
    await gw.start()
    cli = client.create(core=core, transport="mqtt", metrics=True,
                        metrics_registry=client_registry)
    cli.add_proxies([{"namespace": "user", "server_type": "test", "path": TEST_DIR}])
    cli.add_servers([{"id": "srv-1", "server_type": "test", "port": gw.port}])
    await cli.start()
    svc = cli.proxies.user.test.service
    try:
        for i in range(5):
            assert await svc.slow_echo.to_server("srv-1", i, 0) == i
        for i in range(3):
            with pytest.raises(RemoteError):
                await svc.async_fail.to_server("srv-1", "no")
        for i in range(4):
            with pytest.raises(RemoteError):
                await cli.rpc_invoke("srv-1", unknown_msg(f"nothing{i}"))
        theirs = samples(generate_latest(server_registry).decode())
        mine = samples(generate_latest(client_registry).decode())
    finally:
        await cli.stop()
        await gw.stop()
    for side, got in (("server", theirs), ("client", mine)):
        assert calls(got, side, "user.service.slow_echo", "ok") == 5
        assert calls(got, side, "user.service.async_fail", "error") == 3
        assert calls(got, side, "unknown", "error") == 4
        assert routes_of(got, side) == {"user.service.slow_echo", "user.service.async_fail",
                                        "unknown"}
        assert gauge(got, f"pomelo_rpc_{side}_connections") == 1


async def test_gateways_and_clients_share_one_collector_per_registry(core):
    """Several gateways and clients of one process count into their registry's one
    collector (no duplicate registration), apart by server id; ``metrics_registry=None``
    is prometheus_client's global REGISTRY."""
    from pomelo_rpc.metrics import for_registry
    assert for_registry(None) is for_registry(prometheus_client.REGISTRY)
    registry = CollectorRegistry()
    gws, clis = [], []
    try:
        for i in range(2):
            gw = server.create(paths=[{"namespace": "user", "path": TEST_DIR}], core=core,
                               context={"server_id": f"srv-{i}"}, metrics=True,
                               metrics_registry=registry)
            await gw.start()
            gws.append(gw)
            cli = client.create(core=core, metrics=True, metrics_registry=registry)
            cli.add_servers([{"id": f"srv-{j}", "server_type": "test", "port": g.port}
                             for j, g in enumerate(gws)])
            await cli.start()
            clis.append(cli)
        for cli in clis:
            for sid in cli.server_ids("test"):
                await cli.rpc_invoke(sid, {"namespace": "user", "server_type": "test",
                                           "service": "service", "method": "echo", "args": [1]})
        text = generate_latest(registry).decode()
    finally:
        for cli in clis:
            await cli.stop()
        for gw in gws:
            await gw.stop()
    assert text.count("# TYPE pomelo_rpc_client_calls_total counter") == 1
    found = samples(text)
    # client 0 knows srv-0; client 1 both: srv-0 got 2 calls, srv-1 one, on both sides
    for side in ("client", "server"):
        assert calls(found, side, "user.service.echo", "ok", "srv-0") == 2
        assert calls(found, side, "user.service.echo", "ok", "srv-1") == 1
    assert gauge(found, "pomelo_rpc_client_connections", "srv-0") == 2
    assert gauge(found, "pomelo_rpc_server_connections", "srv-0") == 2


# hostile input, with metrics and tracing on -------------------------------------

def frame(obj):
    body = msgpack.packb(obj)
    return struct.pack(">I", len(body)) + body


def garbage_name(rng):
    kind = rng.randrange(5)
    if kind == 0:
        return "".join(rng.choices(string.printable, k=rng.randrange(1, 40)))
    if kind == 1:
        return rng.randrange(-10**6, 10**6)
    if kind == 2:
        return None
    if kind == 3:
        return ["x"] * rng.randrange(3)
    return "user"


def garbage_trace(rng):
    return rng.choice([
        None, 7, "", "x" * 5000, "00-" + "0" * 32 + "-" + "0" * 16 + "-01",
        "00-" + "g" * 32 + "-" + "1" * 16 + "-01", "ff-" + "a" * 32 + "-" + "b" * 16 + "-01",
        "".join(rng.choices(string.hexdigits + "-", k=55)), ["00-"], {"a": 1}])


async def test_hostile_input_with_metrics_and_tracing_on(core, caplog):
    """Garbage routes and trace fields on both transports: no crash, the server keeps
    answering, no label and no span name per garbage name, every request counted."""
    from otel_support import new_provider
    provider, exporter = new_provider()
    caplog.set_level("DEBUG", logger="pomelo_rpc.trace")   # rpc_debug_log on as well
    registry = CollectorRegistry()
    mqtt = core_pkg.select(core).mqtt
    rng = random.Random(1616)
    gws = {}
    for transport in ("native", "mqtt"):
        gws[transport] = server.create(
            paths=[{"namespace": "user", "path": TEST_DIR}], core=core, transport=transport,
            context={"server_id": f"srv-{transport}"}, metrics=True, metrics_registry=registry,
            tracing=provider, rpc_debug_log=True)
        await gws[transport].start()
    sent = 0
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gws["native"].port)
        frames = []
        for rid in range(600):
            trace = garbage_trace(rng)
            if rid % 3:
                frames.append(frame([2, rid, garbage_name(rng), garbage_name(rng),
                                     garbage_name(rng), [], trace]))
            else:
                frames.append(frame([1, rid, rng.choice([-1, 10**9, "x", None, 3.5]), [],
                                     trace]))
        writer.write(b"".join(frames))
        answers = 0
        header = await reader.readexactly(4)     # the HELLO
        await reader.readexactly(struct.unpack(">I", header)[0])
        while answers < len(frames):
            size = struct.unpack(">I", await asyncio.wait_for(reader.readexactly(4), 10))[0]
            answer = msgpack.unpackb(await reader.readexactly(size), raw=False)
            assert answer[0] == 4, answer          # every one an error answer
            answers += 1
        sent += len(frames)
        writer.close()

        reader, writer = await asyncio.open_connection("127.0.0.1", gws["mqtt"].port)
        packets = [mqtt.encode_connect(None, 0)]
        for rid in range(300):
            pkg = {"id": rid, "traceparent": garbage_trace(rng), "traceId": garbage_trace(rng),
                   "msg": {"namespace": garbage_name(rng), "service": garbage_name(rng),
                           "method": garbage_name(rng), "args": []}}
            packets.append(mqtt.encode_publish(json.dumps(pkg).encode()))
        packets.append(mqtt.encode_publish(b"{not json"))
        writer.write(b"".join(packets))
        decoder = mqtt.MqttDecoder()
        answers = 0
        while answers < 300:
            for packet in decoder.feed(await asyncio.wait_for(reader.read(65536), 10)):
                assert json.loads(packet[2])["resp"][0] is not None
                answers += 1
        sent += 300
        writer.close()

        # both servers still serve a well-behaved, traced client
        for transport, gw in gws.items():
            cli = client.create(core=core, transport=transport, tracing=provider,
                                metrics=True, metrics_registry=registry)
            cli.add_servers([{"id": f"srv-{transport}", "server_type": "test",
                              "port": gw.port}])
            await cli.start()
            assert await cli.rpc_invoke(f"srv-{transport}", {
                "namespace": "user", "server_type": "test", "service": "service",
                "method": "echo", "args": ["still here"]}) == "still here"
            await cli.stop()
    finally:
        for gw in gws.values():
            await gw.stop()
    found = samples(generate_latest(registry).decode())
    assert routes_of(found, "server") <= {"unknown", "user.service.echo"}
    assert sum(calls(found, "server", "unknown", "error", f"srv-{t}")
               for t in ("native", "mqtt")) == sent
    assert len(found) < 400      # a fixed set of series, whatever the garbage
    names = {span.name for span in exporter.get_finished_spans()}
    assert names <= {"pomelo_rpc/unknown", "user.service/echo"}, names
    assert len(exporter.get_finished_spans()) == sent + 4
