"""The file backend reads pomelo's own servers.json, in both of its shapes, and follows
edits made by hand."""

import asyncio
import json
import os

import pytest

from conftest import REMOTE
from pomelo_rpc import client, server
from pomelo_rpc import registry
from pomelo_rpc.registry import RegistryError
from pomelo_rpc.registry.file import FileRegistry

AREA = os.path.join(REMOTE, "area")


def write(path, data):
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


async def wait_for(check, limit=1.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not check():
        assert loop.time() < deadline, "not within the limit"
        await asyncio.sleep(0.01)


async def test_follows_a_hand_written_environment_keyed_servers_json(tmp_path):
    gws = [server.create(paths=[{"namespace": "user", "path": AREA}],
                         context={"server_id": f"area-{i}"}) for i in (1, 2)]
    for gw in gws:
        await gw.start()
    path = tmp_path / "servers.json"
    entry = lambda i: {"id": f"area-{i}", "host": "127.0.0.1", "port": gws[i - 1].port,  # noqa: E731
                       "frontend": False}
    write(path, {"development": {"area": [entry(1)]},
                 "production": {"area": [{"id": "prod-area", "host": "10.0.0.1", "port": 1}]}})
    cli = client.create(registry=f"file://{path}", cluster="development")
    cli.add_proxies([{"namespace": "user", "server_type": "area", "path": AREA}])
    await cli.start()
    assert cli.server_ids("area") == ["area-1"]
    assert cli.server_info("area-1")["frontend"] is False    # pomelo's keys travel along
    write(path, {"development": {"area": [entry(1), entry(2)]}})
    await wait_for(lambda: cli.server_ids("area") == ["area-1", "area-2"])
    answer = await cli.proxies.user.area.work.echo.to_server("area-2", 5)
    assert answer == {"server_id": "area-2", "value": 5}
    write(path, {"development": {"area": [entry(2)]}})       # removed by hand: vanished
    await wait_for(lambda: cli.server_ids("area") == ["area-2"])
    await cli.stop()
    for gw in gws:
        await gw.stop()


async def test_type_keyed_servers_json_is_a_static_list_servers_cannot_register_in(tmp_path):
    path = tmp_path / "servers.json"
    write(path, {"area": [{"id": "area-1", "host": "127.0.0.1", "port": 3150}],
                 "chat": [{"id": "chat-1", "serverType": "chat", "port": 3160}]})
    cli = client.create(registry=f"file://{path}", cluster="anything")
    await cli.start()
    assert (cli.server_ids("area"), cli.server_ids("chat")) == (["area-1"], ["chat-1"])
    await cli.stop()
    gw = server.create(paths=[{"namespace": "user", "path": AREA}], registry=f"file://{path}",
                       server_info={"id": "area-2", "server_type": "area"})
    with pytest.raises(RegistryError, match="type-keyed"):
        await gw.start()
    assert gw.port is None


def test_registry_needs_a_server_id_and_type():
    with pytest.raises(ValueError, match="server_info"):
        server.create(registry="file:///tmp/servers.json", server_info={"id": "x"})
    with pytest.raises(ValueError, match="cluster name"):
        client.create(registry="file:///tmp/servers.json", cluster="a b")


async def test_registry_objects_and_schemes_of_ones_own(tmp_path):
    path = tmp_path / "servers.json"
    write(path, {"development": {"area": [{"id": "area-1", "port": 3150}]}})
    with pytest.raises(ValueError, match="unknown registry scheme 'consul'"):
        registry.create("consul://127.0.0.1:8500", cluster="development", ttl=1.0,
                        connect_timeout=1.0)
    registry.register_scheme("servers", FileRegistry)
    reg = registry.create(f"servers://{path}", cluster="development", ttl=1.0,
                          connect_timeout=1.0)
    assert isinstance(reg, FileRegistry) and isinstance(reg, registry.Registry)
    cli = client.create(registry=reg, cluster="development")     # an object, as it is
    await cli.start()
    assert cli.server_ids("area") == ["area-1"]
    await cli.stop()
