"""Demo area service: players move around a map held by the area server."""


class Player:
    def __init__(self, context):
        self.server_id = (context or {}).get("server_id")
        self.positions = {}

    def move(self, uid, x, y):
        self.positions[uid] = (x, y)
        return {"uid": uid, "at": [x, y], "server_id": self.server_id}

    def count(self):
        return {"server_id": self.server_id, "players": len(self.positions)}

    def echo(self, payload):
        return payload

    def teleport(self, uid, where):
        raise ValueError(f"player {uid} cannot teleport to {where!r}")


def create(context):
    return Player(context)
