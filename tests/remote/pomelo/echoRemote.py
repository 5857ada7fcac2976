"""The Python servers of type "py" in the pomelo cluster of tests/node/pomelo_app:
Node servers call it as ``app.rpc.py.echoRemote.<method>``."""

import asyncio


class EchoRemote:
    def __init__(self, context):
        self.server_id = (context or {}).get("server_id")

    def echo(self, msg):
        return {"server_id": self.server_id, "msg": msg}

    async def slow(self, msg, seconds):
        await asyncio.sleep(seconds)
        return {"server_id": self.server_id, "msg": msg}


def create(context):
    return EchoRemote(context)
