"""The JSON of pomelo-rpc 1.0.7's mqtt payloads, for both sides (the mqtt mailbox and
the mqtt acceptor): compact ``dumps`` exactly as Node's ``JSON.stringify`` writes what
RPC carries, a ``loads`` that skips ``json.loads``' Python layers, and the request,
batch and response payloads.

With orjson installed (``pomelo-rpc[mqtt]``), it writes and reads the payloads where
its text and values are exactly the ``json`` module's: ``dumps`` of the compiled core
hands it a value its ``mqtt.plain_json`` walk accepts (and ``json`` everything else:
NaN, floats below 1e-4, integers past 64 bits, subclasses, other types, deep
nesting), and ``core_loads`` of the compiled core a payload without a run of 19
digits (which orjson would read as a float); anything orjson refuses goes to
``json``, whose errors are then the ones raised. Without orjson, ``json`` does it all.
"""

from __future__ import annotations

import json
import json.encoder
import json.scanner
import traceback
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .errors import error_fields

if TYPE_CHECKING:
    from .core import Core

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_encoder_dumps = _ENCODER.encode
_json_loads = json.loads
_JSON_OPEN = (0x7B, 0x5B)     # b"{", b"["

# The scanner behind json.loads, made once (json.loads runs four Python frames first);
# json's C scanner and encoder are None where _json is missing (typeshed omits them).
_c_make_scanner: Any = getattr(json.scanner, "c_make_scanner", None)
_c_make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
_c_scan: Any = None if _c_make_scanner is None else _c_make_scanner(json.JSONDecoder())

_orjson: Any
try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - the extra is not installed
    _orjson = None
_orjson_dumps: Any = None if _orjson is None else _orjson.dumps
_orjson_loads: Any = None if _orjson is None else _orjson.loads


class RawResults(str):
    """A call's results after the leading ``null`` of pomelo's callback, already JSON
    text: a method returning ``RawResults('{"code":200},null')`` is answered
    ``"resp":[null,{"code":200},null]`` on mqtt (pomelo's ``cb(null, resp, opts)``).
    ``dumps`` writes one as it is, never quoted; only the mqtt answer should carry one.
    """

    __slots__ = ()


#: the cores' ``json_codec.RawJson`` (JSON already written, a backend's answer): ``dumps``
#: writes one as its text (``json_codec`` adds each core's)
RAW_JSON: set[type] = set()


class ErrorAnswer(Exception):
    """An error answered on mqtt with the exact ``resp`` elements it carries, e.g.
    ``[{"stack": ...}, {"code": 501}]`` (pomelo's ``cb(err, resp)``), instead of the
    usual ``[error_object(exc)]``."""

    def __init__(self, resp: list[Any], message: str = "") -> None:
        super().__init__(message or "error answer")
        self.resp = resp


def make_dumps(json_string: Callable[[str], str] = json.encoder.encode_basestring,
               ) -> Callable[[Any], str]:
    """A ``dumps`` whose C encoder is made once (``JSONEncoder.encode`` makes one per
    call) and writes each string with ``json_string``: a core's ``mqtt.json_string``,
    which must give exactly what ``json.encoder.encode_basestring`` gives."""
    if _c_make_encoder is None:  # pragma: no cover - CPython has _json
        return _encoder_dumps
    markers: dict[int, Any] = {}
    c_encode = _c_make_encoder(markers, _ENCODER.default, json_string, None, ":", ",",
                               False, False, False)

    def dumps(value: Any) -> str:
        """Compact JSON text of ``value``: exactly ``json.JSONEncoder(separators=(",",
        ":"), ensure_ascii=False, allow_nan=False).encode(value)``, errors included."""
        # markers (the circular-reference check) is not empty while an encoding is
        # under way: a re-entrant call, from a container's own code, gets its own encoder.
        # A str goes to the Python encoder anyway: RawResults, a str, is checked there
        # (no cost for any other value)
        if markers or isinstance(value, str):
            if type(value) is RawResults:
                return str.__str__(value)
            return _encoder_dumps(value)
        try:
            return "".join(c_encode(value, 0))
        except BaseException:
            markers.clear()       # the C encoder leaves its marks behind on an error
            if type(value) in RAW_JSON:     # a core's JSON already written
                text: str = value.data.decode("utf-8")
                return text
            raise
    return dumps


#: Compact JSON text of a value (TypeError/ValueError if JSON cannot carry it).
dumps = make_dumps()

_codecs: dict[str, Any] = {}


def json_codec(core: Core) -> Any:
    """``core``'s ``json_codec.JsonCodec`` (made once per core): ``json``'s text and values
    (strings written with ``core``'s ``mqtt.json_string``, the same text; the compiled
    one only quotes an ASCII string with nothing to escape), and for the compiled core
    with orjson, orjson's where ``mqtt.plain_json`` and ``mqtt.long_digits`` say it is
    the same (see the module docstring)."""
    codec = _codecs.get(core.name)
    if codec is None:
        slow = make_dumps(core.mqtt.json_string)
        if _orjson_loads is not None and core.name == "cython":
            codec = core.json_codec.JsonCodec(loads, slow, _orjson_loads, core.mqtt.long_digits,
                                              _orjson_dumps, core.mqtt.plain_json,
                                              core.mqtt.json_string, RawResults)
        else:
            codec = core.json_codec.JsonCodec(loads, slow, json_string=core.mqtt.json_string,
                                              raw_text=RawResults)
        _codecs[core.name] = codec
        RAW_JSON.add(core.json_codec.RawJson)
    return codec


def core_dumps(core: Core) -> Callable[[Any], str]:
    """``dumps`` of ``core``'s codec (``json_codec``); without orjson or in the pure
    core, its ``json`` writer itself (no method between)."""
    codec = json_codec(core)
    fn: Callable[[Any], str] = codec.dumps if codec.fast_dumps is not None else codec.slow_dumps
    return fn


def core_loads(core: Core) -> Callable[[bytes | str], Any]:
    """``loads`` of ``core``'s codec (``json_codec``); without orjson or in the pure core,
    ``loads`` itself."""
    codec = json_codec(core)
    fn: Callable[[bytes | str], Any] = codec.loads if codec.fast_loads is not None else loads
    return fn


def server_codec(core: Core) -> tuple[Any, Callable[[Any, Any], bytes]]:
    """What a core's ``json_protocol.JsonServerProtocol`` reads and writes JSON with:
    ``core``'s codec and ``result_payload`` with its ``dumps``."""
    dumps = core_dumps(core)

    def payload(rid: Any, result: Any) -> bytes:
        """``result_payload`` with the core's ``dumps``."""
        return result_payload(rid, result, dumps)
    return json_codec(core), payload


def loads(data: bytes | str) -> Any:
    """``json.loads(data)``: the same value, or the same error.

    An RPC payload (UTF-8 bytes of a JSON object or array) goes straight to the
    scanner; anything else, and anything it rejects, goes through ``json.loads``.
    """
    if _c_scan is not None and type(data) is bytes and data and data[0] in _JSON_OPEN:
        try:
            text = data.decode("utf-8")
            value, end = _c_scan(text, 0)
        except (ValueError, StopIteration):
            return _json_loads(data)
        if end == len(text) or not text[end:].strip(" \t\n\r"):
            return value
    return _json_loads(data)


def json_bytes(value: Any) -> bytes:
    """UTF-8 compact JSON of ``value`` (TypeError/ValueError if JSON cannot carry it)."""
    return dumps(value).encode("utf-8")


def batch_payload(parts: Iterable[bytes]) -> bytes:
    """Payload of a JSON array made of ``parts``, each the UTF-8 JSON of one item."""
    return b"[" + b",".join(parts) + b"]"


def error_object(exc: BaseException) -> dict[str, Any]:
    """``{"msg", "message", "stack"}`` of an exception (and its ``code``, when it has
    one), as pomelo-rpc sends an error.

    The stack starts with ``<Type>: <message>`` like a JavaScript one, so that both a
    Node caller and a Python one (type from the stack) see it; pomelo's callers read
    ``err.msg``, pinus hands the object on and its callers read ``err.message`` (and
    ``err.code``).
    """
    message = str(exc)
    frames = "".join(traceback.format_tb(exc.__traceback__)) if exc.__traceback__ else ""
    out: dict[str, Any] = {"msg": message, "message": message,
                           "stack": f"{type(exc).__name__}: {message}\n{frames}"}
    fields = error_fields(exc)
    if fields is not None:
        out.update(fields)
    return out


def failure_payload(rid: Any, exc: BaseException) -> bytes:
    """UTF-8 JSON of the response to call ``rid`` that failed with ``exc``."""
    text = f'{{"id":{dumps(rid)},"resp":[{dumps(error_object(exc))}]}}'
    return text.encode("utf-8", "replace")


def answer_payload(rid: Any, exc: ErrorAnswer) -> bytes:
    """UTF-8 JSON of the response to call ``rid`` carrying ``exc.resp`` as it is."""
    try:
        return f'{{"id":{dumps(rid)},"resp":{dumps(exc.resp)}}}'.encode("utf-8", "replace")
    except (TypeError, ValueError) as bad:
        return failure_payload(rid, TypeError(f"error answer cannot be serialized: {bad}"))


def result_payload(rid: Any, result: Any, dumps: Callable[[Any], str] = dumps) -> bytes:
    """UTF-8 JSON of the response to call ``rid`` returning ``result``.

    pomelo's callback convention: ``resp`` is ``[null, result]``. A result JSON
    cannot carry becomes an error response. ``dumps``: see ``core_dumps``.
    """
    try:
        return ('{"id":' + (str(rid) if type(rid) is int else dumps(rid)) + ',"resp":[null,'
                + dumps(result) + "]}").encode("utf-8")
    except (TypeError, ValueError) as exc:   # UnicodeEncodeError is a ValueError
        return failure_payload(rid, TypeError(f"result cannot be serialized: {exc}"))
