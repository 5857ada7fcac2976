"""The Python side of app/servers/area/remote/areaRemote.js (Node servers call it)."""


class AreaRemote:
    def __init__(self, app):
        self.app = app

    def echo(self, msg):
        return {"server_id": self.app.server_id, "msg": msg}


def create(app):
    return AreaRemote(app)
