"""Area service used by routing tests and the demo: answers with the server id."""


class Player:
    def __init__(self, context):
        self.server_id = (context or {}).get("server_id")

    def where(self, uid):
        return {"uid": uid, "server_id": self.server_id}


def create(context):
    return Player(context)
