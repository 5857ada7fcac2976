"""The "py" servers' remote in the pinus tests: Node servers call it through
``app.rpc.py.echoRemote`` (built from the JS stubs of this directory)."""


class EchoRemote:
    def __init__(self, context):
        context = context or {}
        self.server_id = context.get("server_id")
        self.notes = context.get("notes", [])

    def echo(self, msg):
        return {"echo": msg, "by": self.server_id}

    def nothing(self):
        return None

    async def note(self, msg):
        self.notes.append(msg)


def create(context):
    return EchoRemote(context)
