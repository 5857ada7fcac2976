# cython: annotation_typing=False
"""The JSON of the JSON transports (mqtt, pinus-tcp), read and written as ``json`` does,
orjson's where that is exactly the same: one source for both cores.

Imported as it is for the pure-Python core; compiled with
``pomelo_rpc/_cy/json_codec.pxd`` for the Cython core, whose ``JsonCodec`` methods are
then C functions (no Python frame between a protocol and orjson).
``pomelo_rpc.mqtt_json.json_codec`` makes a core's codec (see its module docstring for
the rules that keep orjson's values and text exactly ``json``'s).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .mqtt import plain_json as _plain_json

if TYPE_CHECKING:
    from collections.abc import Callable



class RawJson:
    """JSON text already written, its UTF-8 ``data``: ``JsonCodec.dumps_bytes`` writes it
    as it is, ``dumps`` as its text (a backend's answer, made by ``core.forward``)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class JsonCodec:
    """``loads`` and ``dumps`` exactly ``json``'s: ``slow_loads`` and ``slow_dumps`` (the
    ``json`` module's, made faster in ``mqtt_json``), and before them, when given,
    orjson's ``fast_loads`` for a payload ``long_digits`` passes and ``fast_dumps`` for a
    value ``plain_json`` accepts (``core.mqtt.plain_json``, called as this core's own: a C
    function in the compiled core) (and in ``dumps_bytes``, ``json_string`` a str, and a ``raw_text`` as it is)."""

    def __init__(self, slow_loads: Callable[[bytes | str], Any],
                 slow_dumps: Callable[[Any], str],
                 fast_loads: Callable[[bytes], Any] | None = None,
                 long_digits: Callable[[bytes], bool] | None = None,
                 fast_dumps: Callable[[Any], bytes] | None = None,
                 plain_json: Callable[[Any], bool] | None = None,
                 json_string: Callable[[str], str] | None = None,
                 raw_text: type | None = None) -> None:
        self.slow_loads = slow_loads
        self.slow_dumps = slow_dumps
        self.fast_loads = fast_loads
        self.long_digits = long_digits
        self.fast_dumps = fast_dumps
        self.plain_json = plain_json
        #: the JSON text of a str, exactly ``json``'s (a core's ``mqtt.json_string``)
        self.json_string = json_string
        #: a str subclass whose value is already JSON text, written as it is
        #: (``pomelo_rpc.mqtt_json.RawResults``)
        self.raw_text = raw_text

    def loads(self, data: bytes | str) -> Any:
        """``json.loads(data)``: the same value, or the same error."""
        if self.long_digits is not None and type(data) is bytes and self.long_digits(data):
            return self.slow_loads(data)     # an integer orjson would read as a float
        return self.loads_short(data)

    def loads_short(self, data: bytes | str) -> Any:
        """``loads(data)`` of a ``data`` without a run of 19 digits (which
        ``core.mqtt.long_digits`` finds)."""
        fast = self.fast_loads
        if fast is not None and type(data) is bytes:
            raw: bytes = data
            first = raw[0] if raw else 0
            if first == 0x7B or first == 0x5B:        # b"{", b"[" (C constants)
                try:
                    return fast(raw)
                except ValueError:       # orjson refuses it: json decides, and raises
                    pass
        return self.slow_loads(data)

    def dumps(self, value: Any) -> str:
        """Compact JSON text of ``value``, exactly ``json``'s (TypeError/ValueError if
        JSON cannot carry it)."""
        if type(value) is RawJson:
            raw_json: RawJson = value
            text: str = raw_json.data.decode("utf-8")
            return text
        if self.plain_json is not None and self.fast_dumps is not None and _plain_json(value):
            try:
                text = self.fast_dumps(value).decode()
                return text
            except TypeError:          # a str orjson refuses (a lone surrogate)
                pass
        return self.slow_dumps(value)

    def dumps_bytes(self, value: Any) -> bytes:
        """``dumps(value)`` in UTF-8 (a str JSON cannot carry in UTF-8, a lone surrogate,
        is a ValueError)."""
        kind = type(value)
        if kind is RawJson:
            raw_json: RawJson = value
            return raw_json.data
        if kind is str and self.json_string is not None:
            return self.json_string(value).encode("utf-8")
        if self.raw_text is not None and kind is self.raw_text:
            raw: bytes = value.encode("utf-8")
            return raw
        if self.plain_json is not None and self.fast_dumps is not None and _plain_json(value):
            try:
                data: bytes = self.fast_dumps(value)
                return data
            except TypeError:
                pass
        return self.slow_dumps(value).encode("utf-8")
