"""Security helpers shared by the transports: the auth_token proofs, the allow list,
rate-limited logging of refused connections, TLS contexts and the exposure warning.

The native handshake, when the server has an ``auth_token``::

    server -> client  [CHALLENGE, version, server_nonce]        (32 random bytes)
    client -> server  [AUTH, client_proof, client_nonce]        (32 random bytes)
    server -> client  [AUTH_OK, server_proof] then HELLO

``client_proof`` = HMAC-SHA256(token, "pomelo_rpc auth v1 client" + server_nonce +
client_nonce) and ``server_proof`` the same under the label "server": each side proves
it holds the token without sending it, a proof is bound to the nonces of one
connection (a recorded one is useless on another) and to its direction (a server's
proof cannot be played back as a client's). Both are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import ssl
import time
from collections.abc import Iterable
from typing import Any, Union

NONCE_SIZE = 32
_CLIENT_LABEL = b"pomelo_rpc auth v1 client\x00"
_SERVER_LABEL = b"pomelo_rpc auth v1 server\x00"

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


def token_bytes(token: str | bytes | None) -> bytes | None:
    """The ``auth_token`` option as bytes (a str is UTF-8 encoded); None: no token.
    An empty token is a ValueError (an unset variable must not turn authentication off)."""
    if token is None:
        return None
    if not isinstance(token, (str, bytes, bytearray)):
        raise TypeError(f"auth_token must be a str or bytes, not {type(token).__name__}")
    raw = token.encode("utf-8") if isinstance(token, str) else bytes(token)
    if not raw:
        raise ValueError("auth_token is empty")
    return raw


def new_nonce() -> bytes:
    """A fresh random nonce for one handshake."""
    return os.urandom(NONCE_SIZE)


def _proof(label: bytes, token: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    return hmac.new(token, label + server_nonce + client_nonce, hashlib.sha256).digest()


def client_proof(token: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    """What the client sends in AUTH: it holds ``token`` (bound to both nonces)."""
    return _proof(_CLIENT_LABEL, token, server_nonce, client_nonce)


def server_proof(token: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    """What the server sends in AUTH_OK: it holds ``token`` too."""
    return _proof(_SERVER_LABEL, token, server_nonce, client_nonce)


def _is_bytes(value: object, size: int) -> bool:
    return type(value) is bytes and len(value) == size


def check_auth(msg: Any, token: bytes, auth_kind: int, server_nonce: bytes) -> bytes | None:
    """The client's nonce if ``msg`` is ``[AUTH, proof, client_nonce]`` with the right
    proof, else None (any other message, of any shape, never raises)."""
    if type(msg) is not list or len(msg) != 3 or msg[0] != auth_kind:
        return None
    proof, nonce = msg[1], msg[2]
    if not _is_bytes(proof, 32) or not _is_bytes(nonce, NONCE_SIZE):
        return None
    if not hmac.compare_digest(proof, client_proof(token, server_nonce, nonce)):
        return None
    return nonce  # type: ignore[no-any-return]  # checked to be bytes just above


def check_auth_ok(msg: Any, token: bytes, server_nonce: bytes, client_nonce: bytes) -> bool:
    """True if ``msg`` (an AUTH_OK, kind already checked) carries the server's right proof."""
    if type(msg) is not list or len(msg) != 2 or not _is_bytes(msg[1], 32):
        return False
    return hmac.compare_digest(msg[1], server_proof(token, server_nonce, client_nonce))


def challenge_nonce(msg: Any) -> bytes | None:
    """The server nonce of a ``[CHALLENGE, version, nonce]`` (kind already checked), or None."""
    if type(msg) is not list or len(msg) != 3 or not _is_bytes(msg[2], NONCE_SIZE):
        return None
    return msg[2]  # type: ignore[no-any-return]  # checked to be bytes just above


# allow list ---------------------------------------------------------------------

def parse_allow(allow: Any) -> list[Network] | None:
    """The ``allow`` option as networks: None (everyone), or an address, a network
    (``"10.0.0.0/8"``), or an iterable of them; a string may list several, comma-separated.
    ValueError on an entry that is neither."""
    if allow is None:
        return None
    items: Iterable[Any]
    if isinstance(allow, str):
        items = [part for part in allow.split(",") if part.strip()]
    elif isinstance(allow, (ipaddress.IPv4Address, ipaddress.IPv6Address,
                            ipaddress.IPv4Network, ipaddress.IPv6Network)):
        items = [allow]
    else:
        items = allow
    out: list[Network] = []
    for item in items:
        text = item.strip() if isinstance(item, str) else item
        try:
            out.append(ipaddress.ip_network(text, strict=False))
        except (ValueError, TypeError):
            raise ValueError(f"allow: {item!r} is not an IP address or network") from None
    return out


def peer_allowed(networks: list[Network], peer: Any) -> bool:
    """True if the peer address (a transport's ``peername``) is in one of ``networks``.
    An IPv4 peer seen as IPv4-mapped IPv6 (``::ffff:a.b.c.d``) matches IPv4 networks."""
    try:
        addr = ipaddress.ip_address(peer[0].split("%", 1)[0])
    except (TypeError, ValueError, IndexError, AttributeError):
        return False      # not an IP peer (e.g. a Unix socket): not on the list
    mapped = getattr(addr, "ipv4_mapped", None)
    return any(addr in net or (mapped is not None and mapped in net) for net in networks)


def check_no_auth_token(opts: dict[str, Any]) -> None:
    """ValueError when ``auth_token`` is set on the pinus-tcp transport, which has no
    handshake to carry it."""
    if opts.get("auth_token") is not None:
        raise ValueError("transport 'pinus-tcp' cannot carry an auth_token (pinus-rpc's tcp "
                         "transport has no handshake): use ssl= between Python processes, "
                         "or the native or mqtt transport")


class RateLimitedLog:
    """Logs a line at most once per ``interval`` s per kind; the ones held back are
    counted and reported with the next one (a port scan cannot flood the log)."""

    def __init__(self, logger: logging.Logger, interval: float = 1.0) -> None:
        self._log = logger
        self._interval = interval
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, kind: str, msg: str, *args: Any) -> None:
        """Log ``msg % args`` unless one of ``kind`` was logged less than ``interval`` s ago."""
        self._emit(logging.WARNING, kind, msg, args)

    def info(self, kind: str, msg: str, *args: Any) -> None:
        """``warning`` at INFO level."""
        self._emit(logging.INFO, kind, msg, args)

    def forget(self, kind: str) -> None:
        """Drop what is kept of ``kind`` (e.g. a server that was removed)."""
        self._last.pop(kind, None)
        self._held.pop(kind, None)

    def _emit(self, level: int, kind: str, msg: str, args: tuple[Any, ...]) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -self._interval) < self._interval:
            self._held[kind] = self._held.get(kind, 0) + 1
            return
        self._last[kind] = now
        held = self._held.pop(kind, 0)
        if held:
            msg += " (and %d more like it not logged)"
            args = args + (held,)
        self._log.log(level, msg, *args)


# TLS ------------------------------------------------------------------------------

def server_ssl_context(certfile: str, keyfile: str | None = None,
                       cafile: str | None = None) -> ssl.SSLContext:
    """A server context with this certificate; with ``cafile``, mutual TLS: clients must
    present a certificate signed by that CA."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=cafile)
    ctx.load_cert_chain(certfile, keyfile)
    if cafile is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_ssl_context(cafile: str | None = None, certfile: str | None = None,
                       keyfile: str | None = None) -> ssl.SSLContext:
    """A client context trusting ``cafile`` (the system's CAs without it), presenting
    ``certfile`` when given (for a server requiring mutual TLS)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    if certfile is not None:
        ctx.load_cert_chain(certfile, keyfile)
    return ctx


def is_loopback(host: Any) -> bool:
    """True if binding ``host`` listens on loopback only."""
    if isinstance(host, str) and host.lower() == "localhost":
        return True
    hosts = [host] if isinstance(host, str) else list(host or ())
    if not hosts:
        return False      # None / "" / []: every interface
    for item in hosts:
        try:
            if not ipaddress.ip_address(item).is_loopback:
                return False
        except ValueError:
            if item.lower() != "localhost":
                return False
    return True


def warn_if_exposed(logger: logging.Logger, host: Any, opts: dict[str, Any]) -> bool:
    """Log a warning when ``host`` is not loopback and none of ssl, auth_token, allow
    is set; return True if it warned."""
    if is_loopback(host) or any(opts.get(key) is not None
                                for key in ("ssl", "auth_token", "allow")):
        return False
    logger.warning("listening on %s with none of ssl, auth_token, allow: anyone who can "
                   "reach this port can call every remote method", host or "every interface")
    return True
