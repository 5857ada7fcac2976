"""The hot core: frame codec, request-id table, dispatch, MQTT codec.

Two implementations with the same names: the compiled one in ``pomelo_rpc._cy``
(built from ``src/*.pyx``) and the pure-Python twin in this package. ``select``
returns one of them as a namespace; ``default()`` honours ``POMELO_RPC_PURE=1``.
"""

from __future__ import annotations

import importlib
import logging
import types
from importlib.machinery import EXTENSION_SUFFIXES
from typing import TYPE_CHECKING, cast

from ..options import env_wants_pure

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Iterable
    from typing import Any, Protocol

    # What the rest of the package uses of a core. Both cores must fit: mypy checks
    # the pure-Python twins and the stubs of the compiled modules (pomelo_rpc/_cy/*.pyi)
    # against these protocols at the end of this module.

    #: Bytes a decoder accepts.
    Buffer = bytes | bytearray | memoryview

    class FrameDecoderLike(Protocol):
        @property
        def buffered(self) -> int: ...
        def feed(self, data: Buffer) -> list[Any]: ...

    class FramesModule(Protocol):
        """``pomelo_rpc.core.frames`` / ``pomelo_rpc._cy.frames``."""

        HEADER_SIZE: int
        HELLO: int
        REQ_ID: int
        REQ_NAME: int
        RESP_OK: int
        RESP_ERR: int
        PING: int
        PONG: int
        CHALLENGE: int
        AUTH: int
        AUTH_OK: int
        PROTOCOL_VERSION: int
        PING_FRAME: bytes
        PONG_FRAME: bytes

        def FrameDecoder(self, max_size: int = ...) -> FrameDecoderLike: ...
        def encode(self, message: Any) -> bytes: ...
        def encode_request(self, rid: int, method_id: int, args: list[Any]) -> bytes: ...
        def encode_request_by_name(self, rid: int, namespace: str, service: str, method: str,
                                   args: list[Any]) -> bytes: ...
        def encode_request_traced(self, rid: int, method_id: int, args: list[Any],
                                  trace_id: str) -> bytes: ...
        def encode_request_by_name_traced(self, rid: int, namespace: str, service: str,
                                          method: str, args: list[Any],
                                          trace_id: str) -> bytes: ...
        def encode_request_budget(self, rid: int, method_id: int, args: list[Any],
                                  trace_id: str | None, budget_ms: int) -> bytes: ...
        def encode_request_by_name_budget(self, rid: int, namespace: str, service: str,
                                          method: str, args: list[Any], trace_id: str | None,
                                          budget_ms: int) -> bytes: ...
        def encode_response(self, rid: int, result: Any) -> bytes: ...
        def encode_error(self, rid: int, type_name: str, message: str,
                         stack: str | None) -> bytes: ...
        def encode_hello(self, table: list[list[str]]) -> bytes: ...
        def encode_challenge(self, nonce: bytes) -> bytes: ...
        def encode_auth(self, proof: bytes, nonce: bytes) -> bytes: ...
        def encode_auth_ok(self, proof: bytes) -> bytes: ...

    class PendingTableLike(Protocol):
        def __len__(self) -> int: ...
        def __contains__(self, rid: object, /) -> bool: ...
        @property
        def slot_count(self) -> int: ...
        def add(self, future: asyncio.Future[Any], deadline: float | None = ...,
                info: Any = ...) -> int: ...
        def pop(self, rid: int) -> tuple[asyncio.Future[Any], Any] | None: ...
        def resolve(self, rid: int, value: Any) -> bool: ...
        def reject(self, rid: int, exc: BaseException) -> bool: ...
        def next_deadline(self) -> float | None: ...
        def expire(self, now: float) -> list[tuple[asyncio.Future[Any], Any]]: ...
        def drain(self) -> list[tuple[asyncio.Future[Any], Any]]: ...

    class PendingModule(Protocol):
        """``pomelo_rpc.core.pending`` / ``pomelo_rpc._cy.pending``."""

        def PendingTable(self, resolution: float = ...,
                         first_id: int = ...) -> PendingTableLike: ...

    #: ``(namespace, service, name, func, min_args, max_args, is_async)``; max_args -1: ``*args``
    MethodEntry = tuple[str, str, str, Callable[..., Any], int, int, bool]

    class MethodLike(Protocol):
        @property
        def mid(self) -> int: ...
        @property
        def namespace(self) -> str: ...
        @property
        def service(self) -> str: ...
        @property
        def name(self) -> str: ...
        @property
        def func(self) -> Callable[..., Any]: ...
        @property
        def min_args(self) -> int: ...
        @property
        def max_args(self) -> int: ...
        @property
        def is_async(self) -> bool: ...
        @property
        def route(self) -> str: ...

    class DispatcherLike(Protocol):
        @property
        def table(self) -> list[list[str]]: ...
        def __len__(self) -> int: ...
        def by_id(self, mid: object) -> MethodLike: ...
        def by_name(self, namespace: str, service: str, name: str) -> MethodLike: ...
        def dispatch(self, msg: object) -> tuple[int, int, Any]: ...
        def describe(self, msg: object) -> tuple[str | None, str | None] | None: ...
        def replace(self, methods: Iterable[MethodEntry]) -> None: ...

    class DispatchModule(Protocol):
        """``pomelo_rpc.core.dispatch`` / ``pomelo_rpc._cy.dispatch``."""

        DONE: int
        FAILED: int
        PENDING: int

        def Dispatcher(self, methods: Iterable[MethodEntry]) -> DispatcherLike: ...

    class MqttDecoderLike(Protocol):
        @property
        def buffered(self) -> int: ...
        def feed(self, data: Buffer) -> list[tuple[Any, ...]]: ...

    class MqttModule(Protocol):
        """``pomelo_rpc.core.mqtt`` / ``pomelo_rpc._cy.mqtt``."""

        CONNECT: int
        CONNACK: int
        PUBLISH: int
        PUBACK: int
        PUBREC: int
        PUBREL: int
        PUBCOMP: int
        SUBSCRIBE: int
        SUBACK: int
        UNSUBSCRIBE: int
        UNSUBACK: int
        PINGREQ: int
        PINGRESP: int
        DISCONNECT: int
        TOPIC_RPC: str
        MAX_REMAINING: int
        PINGREQ_PACKET: bytes
        PINGRESP_PACKET: bytes
        DISCONNECT_PACKET: bytes

        def MqttDecoder(self, max_size: int = ...) -> MqttDecoderLike: ...
        def make_client_id(self) -> str: ...
        def encode_connect(self, client_id: str | bytes | None = ..., keepalive: int = ...,
                           username: str | None = ...,
                           password: bytes | None = ...) -> bytes: ...
        def encode_connack(self, return_code: int = ..., session_present: bool = ...) -> bytes: ...
        def encode_publish(self, payload: Buffer, topic: str | bytes = ..., qos: int = ...,
                           packet_id: int = ...) -> bytes: ...
        def encode_pingreq(self) -> bytes: ...
        def encode_pingresp(self) -> bytes: ...
        def encode_disconnect(self) -> bytes: ...
        def json_string(self, s: str, /) -> str: ...

    class Core(Protocol):
        """The namespace ``select`` returns: a core's name and its four modules."""

        @property
        def name(self) -> str: ...
        @property
        def frames(self) -> FramesModule: ...
        @property
        def pending(self) -> PendingModule: ...
        @property
        def dispatch(self) -> DispatchModule: ...
        @property
        def mqtt(self) -> MqttModule: ...

log = logging.getLogger("pomelo_rpc.core")

#: The modules of a core.
MODULES = ("frames", "pending", "dispatch", "mqtt", "writer")

_loaded: dict[str, Core] = {}


def _load(name: str) -> Core:
    if name not in ("cython", "python"):
        raise ValueError(f"core must be 'cython' or 'python', not {name!r}")
    package = "pomelo_rpc._cy" if name == "cython" else "pomelo_rpc.core"
    modules = {mod: importlib.import_module(f"{package}.{mod}") for mod in MODULES}
    if name == "cython":
        # pomelo_rpc/_cy holds the one-source modules' .py links too: an uncompiled
        # tree imports those as plain Python, which is not the compiled core
        plain = [mod for mod, m in modules.items()
                 if not (m.__file__ or "").endswith(tuple(EXTENSION_SUFFIXES))]
        if plain:
            raise ImportError(f"the Cython core is not compiled ({', '.join(plain)} "
                              f"would load as plain Python)")
    return cast("Core", types.SimpleNamespace(name=name, **modules))


def select(name: str | None = None) -> Core:
    """The core named ``name`` ('cython' or 'python'); None gives the default one."""
    if name is None:
        return default()
    core = _loaded.get(name)
    if core is None:
        core = _loaded[name] = _load(name)
    return core


def available() -> list[str]:
    """Names of the cores that can be loaded here, compiled first."""
    names = []
    for name in ("cython", "python"):
        try:
            select(name)
        except ImportError:
            continue
        names.append(name)
    return names


_default: Core | None = None


def default() -> Core:
    """The compiled core unless POMELO_RPC_PURE is set or it was not built."""
    global _default
    if _default is None:
        if env_wants_pure():
            _default = select("python")
        else:
            try:
                _default = select("cython")
            except ImportError as exc:
                log.debug("compiled core unavailable (%s); using the pure-Python core", exc)
                _default = select("python")
    return _default


if TYPE_CHECKING:
    # both cores fit the protocols above: the pure-Python twins ...
    from . import dispatch as _py_dispatch
    from . import frames as _py_frames
    from . import mqtt as _py_mqtt
    from . import pending as _py_pending
    # ... and the compiled modules, as their stubs describe them
    from .._cy import dispatch as _cy_dispatch
    from .._cy import frames as _cy_frames
    from .._cy import mqtt as _cy_mqtt
    from .._cy import pending as _cy_pending

    _frames: tuple[FramesModule, FramesModule] = (_py_frames, _cy_frames)
    _pending: tuple[PendingModule, PendingModule] = (_py_pending, _cy_pending)
    _dispatch: tuple[DispatchModule, DispatchModule] = (_py_dispatch, _cy_dispatch)
    _mqtt: tuple[MqttModule, MqttModule] = (_py_mqtt, _cy_mqtt)
