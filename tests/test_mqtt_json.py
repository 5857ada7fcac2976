"""The mqtt payloads' JSON through orjson and through the json module: the same text,
the same values, the same errors (orjson goes only where it writes and reads exactly as
``json`` does; ``mqtt_json`` documents where)."""

import enum
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pomelo_rpc import core as core_pkg
from pomelo_rpc import mqtt_json

orjson = pytest.importorskip("orjson")

JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class Color(enum.IntEnum):
    RED = 1


class Text(str):
    pass


scalars = (st.none() | st.booleans() | st.integers() | st.integers(-2**70, 2**70)
           | st.floats() | st.floats(-1e-3, 1e-3) | st.sampled_from([1e-7, 1.5e-5, 1e16, 1e21])
           | st.text(max_size=20) | st.text(st.characters(max_codepoint=0x7f), max_size=20)
           | st.sampled_from(["\ud800", "a\x00b\x1f\x7f", "\u2028", Color.RED, Text("t")]))
values = st.recursive(
    scalars,
    lambda inner: (st.lists(inner, max_size=4) | st.tuples(inner, inner)
                   | st.dictionaries(st.text(max_size=6), inner, max_size=4)
                   | st.dictionaries(st.integers(0, 3), inner, max_size=2)),
    max_leaves=16)


def outcome(fn, value):
    try:
        return ("ok", fn(value))
    except (TypeError, ValueError) as exc:
        return ("error", type(exc))


def compiled_dumps():
    if "cython" not in core_pkg.available():
        pytest.skip("the orjson path is the compiled core's")
    return mqtt_json.core_dumps(core_pkg.select("cython"))


@settings(max_examples=600, deadline=None)
@given(value=values)
def test_orjson_writes_what_json_writes(value):
    assert outcome(compiled_dumps(), value) == outcome(JSON.encode, value)


def test_the_values_orjson_writes_otherwise_go_to_json():
    dumps = compiled_dumps()
    for value in (1.5e-5, 1e-7, [0.00001], 2**64, -2**63 - 1, Color.RED, {1: 2}, [Text("x")]):
        assert dumps(value) == JSON.encode(value)
    for bad in (float("nan"), [float("inf")], object()):
        with pytest.raises((TypeError, ValueError)):
            dumps(bad)
    deep = []
    for _ in range(300):
        deep = [deep]
    assert dumps(deep) == JSON.encode(deep)
    # the plain walk is the same in both cores
    for value in (1, 2**64, 1e-5, 0.0, "s", [1, {"a": (2,)}], {1: 2}, Text("t"), None):
        assert (core_pkg.select("python").mqtt.plain_json(value)
                == core_pkg.select("cython").mqtt.plain_json(value))


texts = st.one_of(
    values.map(lambda v: json.dumps(v, ensure_ascii=False, separators=(",", ":"),
                                    default=str)).filter(lambda t: t[:1] in "[{"),
    st.sampled_from(["[1e400]", "[NaN]", "[-Infinity]", '["\\ud800"]', "[123456789012345678901234]",
                     "[-9223372036854775809]", "[18446744073709551615]", "[1E5, 1e-7, -0]",
                     '{"a":1,"a":2}', "[1,]", "[1] x", "[1]  \n", '{"a" : [ ] }', "{",
                     "[0.1000000000000000055511151231257827]", "[1.7976931348623157e309]"]))


@settings(max_examples=600, deadline=None)
@given(text=texts)
def test_orjson_reads_what_json_reads(text):
    data = text.encode("utf-8", "surrogatepass")
    try:
        want = ("ok", repr(json.loads(data)))
    except ValueError as exc:
        want = ("error", type(exc), str(exc))
    for name in core_pkg.available():
        loads = mqtt_json.core_loads(core_pkg.select(name))
        try:
            got = ("ok", repr(loads(data)))
        except ValueError as exc:
            got = ("error", type(exc), str(exc))
        assert got == want, (name, text)
    for name in core_pkg.available():       # the digit-run scan of both cores
        assert core_pkg.select(name).mqtt.long_digits(data) == ("1" * 19 in
                                                               "".join("1" if c.isdigit() and c.isascii() else " " for c in text))


def test_without_orjson_json_does_it_all(monkeypatch):
    monkeypatch.setattr(mqtt_json, "_orjson_loads", None)
    monkeypatch.setattr(mqtt_json, "_orjson_dumps", None)
    monkeypatch.setattr(mqtt_json, "_codecs", {})
    for name in core_pkg.available():
        dumps = mqtt_json.core_dumps(core_pkg.select(name))
        assert dumps({"a": [1, 2.5, "é"]}) == '{"a":[1,2.5,"é"]}'
    for name in core_pkg.available():
        assert mqtt_json.core_loads(core_pkg.select(name))(b'{"a":[1,2.5]}') == {"a": [1, 2.5]}


def client_protocols():
    """The JSON client protocol of each core (a pinus-tcp mailbox's, never connected)."""
    from pomelo_rpc.options import CLIENT_DEFAULTS
    from pomelo_rpc.pinus_tcp_mailbox import PinusTcpMailbox
    return {name: PinusTcpMailbox({"id": "s", "port": 1}, dict(CLIENT_DEFAULTS),
                                  core_pkg.select(name)).protocol
            for name in core_pkg.available()}


@settings(max_examples=300, deadline=None)
@given(value=values, budget=st.none() | st.integers(1, 2**31))
def test_a_client_call_is_json_text(value, budget):
    """Each core's JSON client writes a call's request as ``json`` would (or fails as
    it fails), the route's head made once and the budget after the id."""
    msg = {"namespace": "user", "server_type": "t", "service": "s", "method": "m",
           "args": value}
    head = "" if budget is None else f',"budget":{budget}'
    want = outcome(lambda v: ('{"id":7' + head + ',"msg":{"namespace":"user",'
                              '"serverType":"t","service":"s","method":"m","args":'
                              + JSON.encode(v) + "}}").encode("utf-8"), value)
    for name, protocol in client_protocols().items():
        got = outcome(lambda v: protocol.call_json(7, dict(msg, args=v), budget), value)
        assert got == want, name


@settings(max_examples=300, deadline=None)
@given(text=texts)
def test_a_client_reads_answers_as_json(text):
    """Each core's JSON client reads a payload as ``json.loads`` does (or fails as it
    fails)."""
    data = text.encode("utf-8", "surrogatepass")
    try:
        want = ("ok", repr(json.loads(data)))
    except ValueError as exc:
        want = ("error", type(exc), str(exc))
    for name, protocol in client_protocols().items():
        try:
            got = ("ok", repr(protocol.codec.loads(data)))
        except ValueError as exc:
            got = ("error", type(exc), str(exc))
        assert got == want, (name, text)


answer_forms = st.sampled_from(['{{"id":{rid},"resp":[null,{v}]}}', '{{"id":0{rid},"resp":[null,{v}]}}',
                                '{{"id":{rid},"resp":[null,{v},2]}}', '{{"id":{rid}, "resp":[null,{v}]}}',
                                '{{"id":{rid},"resp":[null,{v}]}} ', '[{{"id":{rid},"resp":[null,{v}]}}]',
                                '{{"id":{rid},"resp":[null,{v}],"id":{rid}}}'])


@settings(max_examples=300, deadline=None)
@given(text=texts, form=answer_forms)
def test_a_client_resolves_answers_as_json_reads_them(text, form):
    """Each core's JSON client resolves a call with the value ``json.loads`` reads in
    its answer, whatever the form of the answer's text (the common one is read without
    its envelope), and with nothing when the text is not an answer."""
    import asyncio
    loop = asyncio.new_event_loop()
    try:
        for name, protocol in client_protocols().items():
            fut = loop.create_future()
            rid = protocol.table.add(fut, None, {"namespace": "user"})
            data = form.format(rid=rid, v=text).encode("utf-8", "surrogatepass")
            try:
                pkg = json.loads(data)
            except ValueError:
                pkg = None
            protocol.answer(data)
            if isinstance(pkg, list) and len(pkg) == 1:
                pkg = pkg[0]
            if (isinstance(pkg, dict) and pkg.get("id") == rid
                    and pkg.get("resp", [1])[0] is None):
                resp = pkg["resp"][1:]
                want = resp[0] if len(resp) == 1 else resp
                assert fut.done() and repr(fut.result()) == repr(want), (name, data)
            else:
                assert not fut.done(), (name, data)
            protocol.table.pop(rid)
    finally:
        loop.close()
