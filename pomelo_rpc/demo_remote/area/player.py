"""Demo area service: players move around a map held by the area server."""

from __future__ import annotations

from typing import Any


class Player:
    def __init__(self, context: dict[str, Any] | None) -> None:
        self.server_id = (context or {}).get("server_id")
        self.positions: dict[Any, tuple[Any, Any]] = {}

    def move(self, uid: Any, x: Any, y: Any) -> dict[str, Any]:
        self.positions[uid] = (x, y)
        return {"uid": uid, "at": [x, y], "server_id": self.server_id}

    def count(self) -> dict[str, Any]:
        return {"server_id": self.server_id, "players": len(self.positions)}

    def echo(self, payload: Any) -> Any:
        return payload

    def teleport(self, uid: Any, where: Any) -> None:
        raise ValueError(f"player {uid} cannot teleport to {where!r}")


def create(context: dict[str, Any] | None) -> Player:
    return Player(context)
