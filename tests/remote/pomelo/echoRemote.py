"""The Python servers of type "py" in the pomelo cluster of tests/node/pomelo_app:
Node servers call it as ``app.rpc.py.echoRemote.echo``."""


class EchoRemote:
    def __init__(self, context):
        self.server_id = (context or {}).get("server_id")

    def echo(self, msg):
        return {"server_id": self.server_id, "msg": msg}


def create(context):
    return EchoRemote(context)
