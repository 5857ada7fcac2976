"""Exceptions raised by pomelo_rpc; every error a caller sees derives from RpcError."""

from __future__ import annotations

from typing import Any

__all__ = [
    "RpcError",
    "RemoteError",
    "RpcTimeoutError",
    "ConnectionLostError",
    "ServerUnavailableError",
    "AuthenticationError",
    "NoServerError",
    "PendingQueueFullError",
    "ServerBusyError",
    "FrameError",
    "DispatchError",
]


class RpcError(Exception):
    """Base class of every error pomelo_rpc raises to a caller."""


class RemoteError(RpcError):
    """The remote method raised; ``remote_type`` and ``remote_stack`` describe it.

    ``fields``: every field the remote error carried but its stack (a pinus error's own
    fields, ``{"code": 42}``; a Python one's ``code``, when it has one); ``code``:
    ``fields["code"]``, or None."""

    def __init__(self, message: str, remote_type: str = "Error", remote_stack: str | None = None,
                 server_id: str | None = None, fields: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.remote_type = remote_type
        self.remote_stack = remote_stack
        self.server_id = server_id
        self.fields: dict[str, Any] = dict(fields) if fields else {}
        self.code: Any = self.fields.get("code")

    def __str__(self) -> str:
        where = f" on {self.server_id}" if self.server_id else ""
        return f"{self.remote_type}{where}: {self.message}"


def error_fields(exc: BaseException) -> dict[str, Any] | None:
    """The fields an exception is sent with besides its type, message and stack: its
    ``code``, when it has one of a type JSON and msgpack carry (a caller reads it as
    ``RemoteError.code``), else None."""
    code = getattr(exc, "code", None)
    if code is None or type(code) not in (int, str, float, bool):
        return None
    return {"code": code}


class RpcTimeoutError(RpcError, TimeoutError):
    """No response arrived within the call's timeout."""


class ConnectionLostError(RpcError, ConnectionError):
    """The connection to the remote server failed or closed before the response."""


class ServerUnavailableError(ConnectionLostError):
    """The server is known to be down: its connection failed, was declared dead, or
    could not be opened, and it is being probed in the background until it answers
    again. The call was not sent (it never ran), so ``failover`` sends it to another
    server of the type at once."""

    def __init__(self, message: str, server_id: str | None = None) -> None:
        super().__init__(message)
        self.server_id = server_id


class AuthenticationError(ConnectionLostError):
    """The connection was refused for want of proof: a wrong or missing ``auth_token``
    (on either side), or a TLS certificate that does not verify. The call never ran."""


class NoServerError(RpcError, LookupError):
    """No server could be chosen for the call (unknown id, or no server of the type)."""


class PendingQueueFullError(RpcError):
    """Too many calls are waiting for a connection to open (``pending_size``)."""


class ServerBusyError(RpcError):
    """The server held ``max_in_flight`` calls already and refused this one at once.

    The call never ran, so it is safe to send elsewhere (``failover`` does)."""

    metrics_outcome = "busy"

    def __init__(self, message: str, server_id: str | None = None) -> None:
        super().__init__(message)
        self.server_id = server_id


class FrameError(RpcError, ValueError):
    """Bytes from the network are not a valid frame; the connection must be closed."""


class DispatchError(RpcError):
    """A well-formed request that cannot be dispatched (unknown method, wrong arguments).

    Sent back to the caller, where it surfaces as a RemoteError of type ``DispatchError``.
    """


def not_dispatched(exc: BaseException | None) -> bool:
    """True when ``exc`` (a client's or a server's) says the server could not dispatch
    the call: unknown route, wrong argument count, removed method."""
    return isinstance(exc, DispatchError) or (
        isinstance(exc, RemoteError) and exc.remote_type == "DispatchError")
