"""The JSON transports' server protocol in the core (core/json_protocol.py): a request
is answered as ``json`` reads its payload, whether its route's head was learnt or not;
the requests of one read each see their own deadline, and none is left for a later
read; the pieces it runs on (``mqtt.request_parts``, ``json_codec.JsonCodec``) are the
same in both cores."""

import asyncio
import json
import math
import socket

from hypothesis import given, settings, strategies as st

import pomelo_rpc.core as core_pkg
from conftest import REMOTE
from pomelo_rpc import mqtt_json, server
from pomelo_rpc.core import pinus_tcp
from test_pinus_tcp import read_frames, start_server

HEAD = ',"msg":{"namespace":"user","serverType":"test","service":"service","method":"echo","args":'


def payloads():
    """``(payload, id, echoed value or None for an error)``, each sent twice: the first
    may teach the server its head, the second then has only its args parsed."""
    return [
        ('{"id":3' + HEAD + '["a"]}}', 3, "a"),
        ('{"id":4,"budget":5000' + HEAD + '["b"]}}', 4, "b"),
        ('{"id":5,"id":9' + HEAD + '["c"]}}', 9, "c"),                  # the last id counts
        ('{"id":6' + HEAD + '[123456789012345678901]}}', 6, 123456789012345678901),
        ('{"id":7' + HEAD + '[NaN]}}', 7, None),                      # json reads NaN
        ('{"id":8' + HEAD + '["\\ud800"]}}', 8, None),                # a lone surrogate
        ('{"id":10' + HEAD + ' [ "d" ] }}', 10, "d"),
        ('{"id":11,"msg":{"namespace":"user","serverType":"x\\"args\\":","service":"service",'
         '"method":"echo","args":["e"]}}', 11, "e"),
        ('{"id":12,"msg":{"args":["no"],"namespace":"user","service":"service",'
         '"method":"echo","args":["f"]}}', 12, "f"),                  # the last args count
        ('{"id":13,"msg":{"namespace":"user","service":"service","args":["g"],'
         '"method":"echo"}}', 13, "g"),
        ('{"id":14' + HEAD + '["h"],"x":1}}', 14, "h"),
        ('{"id":15' + HEAD + '"i",}}', None, None),                   # not JSON: no answer
        ('{"id":16' + HEAD + '["j"]}}', 16, "j"),
    ]


async def test_requests_are_answered_as_json_reads_them_learnt_or_not(core):
    gw = await start_server(core)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cases = payloads()
        for _ in range(2):
            for text, _rid, _value in cases:
                writer.write(pinus_tcp.encode_request(text.encode("utf-8", "surrogatepass")))
            await writer.drain()
            answered = [c for c in cases if c[1] is not None]
            frames = await read_frames(reader, pinus_tcp.PinusDecoder(), len(answered))
            answers = {}
            for kind, payload in frames:
                assert kind == pinus_tcp.RESPONSE
                answer = json.loads(payload)
                answers[answer["id"]] = (answer["resp"], payload)
            for _text, rid, value in answered:
                resp, payload = answers[rid]
                if value is None:
                    assert resp[0] is not None and "message" in resp[0], rid
                else:
                    assert resp == [None, value], rid
            # a big integer is written as json writes it
            assert b"[null,123456789012345678901]" in answers[6][1]
        writer.close()
    finally:
        await gw.stop()


async def test_requests_of_one_read_see_their_own_deadline_and_none_leaks(core):
    gw = server.create(paths=[{"namespace": "user", "path": f"{REMOTE}/eager"}],
                       transport="pinus-tcp", core=core)
    await gw.start()
    head = ',"msg":{"namespace":"user","service":"eager","method":"%s","args":[]}}'
    budgets = [None, 5000, 5000, None, 60000, 5000, 60000, 60000, None, None, 5000]
    range_of = {None: (None, None), 5000: (1.0, 5.0), 60000: (10.0, 60.0)}

    def payload(rid, budget, method):
        with_budget = "" if budget is None else f',"budget":{budget}'
        return pinus_tcp.encode_request((f'{{"id":{rid}{with_budget}' + head % method).encode())

    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        for _ in range(2):       # the second time with the heads learnt
            # one write, one read: a def and an async def method for every budget
            sent = [(2 * i + 1 + k, budget, method) for i, budget in enumerate(budgets)
                    for k, method in enumerate(("remaining_now", "remaining"))]
            writer.write(b"".join(payload(*s) for s in sent))
            frames = await read_frames(reader, pinus_tcp.PinusDecoder(), len(sent))
            answers = {a["id"]: a["resp"] for a in (json.loads(f[1]) for f in frames)}
            for rid, budget, method in sent:
                error, value = answers[rid]
                assert error is None, error
                left = value if method == "remaining_now" else value[0]
                low, high = range_of[budget]
                if low is None:
                    assert left is None, (rid, left)
                else:
                    assert low < left <= high, (rid, budget, left)
            # a read of its own after them: no deadline left from theirs
            writer.write(payload(1000, None, "remaining_now"))
            frames = await read_frames(reader, pinus_tcp.PinusDecoder(), 1)
            assert json.loads(frames[0][1])["resp"] == [None, None]
        writer.close()
    finally:
        await gw.stop()


@settings(max_examples=400, deadline=None)
@given(prefix=st.sampled_from([b'{"id":', b'{"id":1', b'{"id":0', b'{"id":12,"budget":',
                               b'{"id":7,"budget":0', b'{"id":123456789012345678901']),
       middle=st.binary(max_size=40),
       args=st.sampled_from([b'', b'"args":', b'"args":[1]', b'"args":' + b"9" * 19,
                             b'x"args"', b'"args":[2]}}']),
       tail=st.sampled_from([b'', b'}', b'}}', b'}}}']))
def test_request_parts_are_the_same_in_both_cores(prefix, middle, args, tail):
    payload = prefix + middle + args + tail
    want = core_pkg.select("python").mqtt.request_parts(payload)
    for name in core_pkg.available():
        assert core_pkg.select(name).mqtt.request_parts(payload) == want, name
    if want is not None:
        rid, budget, head, rest = want
        start = b'{"id":%d' % rid + (b'' if budget is None else b',"budget":%d' % budget)
        assert start + head + rest + b"}}" == payload
        assert head.endswith(b'"args":')


VALUES = ["s", "é\n\"", "\ud800", 1, 2**70, 1.5, 1e-7, float("nan"), None, True,
          [1, {"a": "b"}], {"k": [None, 2.5]}, (1, 2), {1: 2}, mqtt_json.RawResults('{"x":1},null')]


def test_the_codec_writes_and_reads_as_json_in_both_cores():
    for name in core_pkg.available():
        codec = mqtt_json.json_codec(core_pkg.select(name))
        for value in VALUES:
            try:
                want = mqtt_json.dumps(value)
            except (TypeError, ValueError) as exc:
                want = type(exc)
            try:
                got = codec.dumps(value)
            except (TypeError, ValueError) as exc:
                got = type(exc)
            assert got == want, (name, value)
            try:
                want_bytes = want.encode("utf-8") if isinstance(want, str) else ValueError
            except UnicodeEncodeError:
                want_bytes = ValueError
            try:
                got_bytes = codec.dumps_bytes(value)
            except (TypeError, ValueError):
                got_bytes = ValueError
            assert got_bytes == want_bytes or (got_bytes is ValueError
                                               and want_bytes is ValueError), (name, value)
        for text in (b'{"a":[1,2.5,"\xc3\xa9"]}', b"[NaN]", b"[123456789012345678901]", b"[1,]",
                     b'"s"', b"[1] x"):
            try:
                want = ("ok", repr(json.loads(text)))
            except ValueError as exc:
                want = ("error", str(exc))
            try:
                got = ("ok", repr(codec.loads(text)))
            except ValueError as exc:
                got = ("error", str(exc))
            assert got == want, (name, text)
    assert math.isnan(mqtt_json.json_codec(core_pkg.select("python")).loads(b"[NaN]")[0])


@settings(max_examples=300, deadline=None)
@given(rid=st.sampled_from([b'0', b'7', b'01', b'123456789012345678', b'1234567890123456789',
                            b'', b'-1', b'x']),
       middle=st.sampled_from([b',"resp":[null,', b',"resp":[null', b',"resp":[1,',
                               b' ,"resp":[null,']),
       value=st.sampled_from([b'', b'1', b'{"a":"b"}', b'"' + b'9' * 19 + b'"', b'[]]', b'x']),
       tail=st.sampled_from([b']}', b'}', b']}}', b'] }', b'']),
       prefix=st.sampled_from([b'{"id":', b'{"id" :', b'[{"id":']))
def test_answer_parts_are_the_same_in_both_cores(prefix, rid, middle, value, tail):
    """The client's reading of the common answer ``{"id":<rid>,"resp":[null,<value>]}``:
    the same parts (or None) in both cores, and they give back the payload."""
    payload = prefix + rid + middle + value + tail
    want = core_pkg.select("python").mqtt.answer_parts(payload)
    for name in core_pkg.available():
        assert core_pkg.select(name).mqtt.answer_parts(payload) == want, name
        assert core_pkg.select(name).mqtt.answer_parts(bytearray(payload)) is None
    if want is not None:
        assert b'{"id":%d,"resp":[null,' % want[0] + want[1] + b"]}" == payload
        assert not core_pkg.select("python").mqtt.long_digits(want[1])


@settings(max_examples=200, deadline=None)
@given(rid=st.integers(-2**63, 2**63 - 1) | st.integers(2**63, 2**80),
       body=st.binary(max_size=300))
def test_answer_payload_is_the_common_answer_in_both_cores(rid, body):
    """The server's common answer, the same text in both cores (an id past 64 bits
    included)."""
    want = b'{"id":%d,"resp":[null,%b]}' % (rid, body)
    for name in core_pkg.available():
        assert core_pkg.select(name).mqtt.answer_payload(rid, body) == want, name


@settings(max_examples=200, deadline=None)
@given(rid=st.integers(-2**63, 2**63 - 1), budget=st.none() | st.integers(-2**63, 2**63 - 1),
       head=st.binary(max_size=300), args=st.binary(max_size=20000))
def test_mqtt_encode_call_is_the_publish_of_its_json(rid, budget, head, args):
    """A call's PUBLISH made in one piece is ``encode_publish`` of its JSON text, the
    same in both cores; what is not bytes is refused."""
    text = b'{"id":%d' % rid + (b"" if budget is None else b',"budget":%d' % budget)
    want = core_pkg.select("python").mqtt.encode_publish(text + head + args + b"}}")
    for name in core_pkg.available():
        mqtt = core_pkg.select(name).mqtt
        assert mqtt.encode_call(rid, budget, head, args) == want, name
        for bad_head, bad_args in ((None, b"1"), (b",", None), ("s", b"1")):
            try:
                mqtt.encode_call(1, None, bad_head, bad_args)
            except TypeError:
                continue
            raise AssertionError(f"{name}: encode_call took {bad_head!r}, {bad_args!r}")
