"""The core's MQTT 3.1.1 codec (``core.mqtt``), run against both twins.

Byte layouts follow MQTT 3.1.1 and what Node pomelo-rpc 1.0.7 (mqtt-packet) sends;
tests/test_mqtt_interop.py compares them with the real Node encoder.
"""

import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pomelo_rpc import core as core_pkg
from pomelo_rpc.errors import FrameError, RpcError

CORES = core_pkg.available()


@pytest.fixture(params=CORES, ids=CORES)
def mq(request):
    """The ``mqtt`` module of one core."""
    return core_pkg.select(request.param).mqtt


def both():
    """Both cores' mqtt modules (skip unless both load)."""
    if len(CORES) < 2:
        pytest.skip(f"only the {CORES} core(s) can be loaded here")
    return [core_pkg.select(name).mqtt for name in CORES]


def decode_all(mq, data, max_size=8 * 1024 * 1024):
    """Decode ``data`` in one feed, which must leave nothing buffered."""
    dec = mq.MqttDecoder(max_size)
    out = dec.feed(data)
    assert dec.buffered == 0
    return out


def decode_error(mq, data, max_size=8 * 1024 * 1024):
    """The FrameError message decoding ``data`` raises."""
    with pytest.raises(FrameError) as info:
        mq.MqttDecoder(max_size).feed(data)
    return str(info.value)


# encoders -------------------------------------------------------------------

def test_module_names(mq):
    assert (mq.CONNECT, mq.CONNACK, mq.PUBLISH, mq.PUBACK, mq.PINGREQ, mq.PINGRESP,
            mq.DISCONNECT) == (1, 2, 3, 4, 12, 13, 14)
    assert mq.TOPIC_RPC == "rpc"
    assert mq.MAX_REMAINING == 268435455


def test_connect_bytes(mq):
    cid = "MQTT_RPC_1700000000000"
    body = b"\x00\x04MQTT" + b"\x04" + b"\x02" + b"\x00\x00" + b"\x00\x16" + cid.encode()
    assert mq.encode_connect(cid) == b"\x10" + bytes([len(body)]) + body
    assert mq.encode_connect(cid, 60)[9:13] == b"\x02\x00\x3c\x00"
    assert decode_all(mq, mq.encode_connect(cid, 60)) == [(mq.CONNECT, cid, 60, None, None)]
    # auth_token on the mqtt transport: a user name and password
    with_pw = mq.encode_connect(cid, 0, "pomelo_rpc", b"s3cret")
    assert with_pw[9] == 0x80 | 0x40 | 0x02
    assert with_pw.endswith(b"\x00\x0apomelo_rpc\x00\x06s3cret")
    assert decode_all(mq, with_pw) == [(mq.CONNECT, cid, 0, "pomelo_rpc", b"s3cret")]
    with pytest.raises(FrameError, match="password needs a user name"):
        mq.encode_connect(cid, 0, None, b"pw")


def test_connect_default_client_id(mq):
    before = int(time.time() * 1000)
    cid = mq.make_client_id()
    assert re.fullmatch(r"MQTT_RPC_\d{13}", cid)
    assert before <= int(cid[9:]) <= int(time.time() * 1000)
    [(kind, got, keepalive, _, _)] = decode_all(mq, mq.encode_connect())
    assert kind == mq.CONNECT and keepalive == 0
    assert re.fullmatch(r"MQTT_RPC_\d{13}", got) and int(got[9:]) >= before


def test_publish_bytes(mq):
    payload = b'{"id":0,"msg":{}}'
    assert mq.encode_publish(payload) == (b"\x30" + bytes([5 + len(payload)]) + b"\x00\x03rpc"
                                          + payload)
    assert mq.encode_publish(payload, "t", 1, 0x1234) == (
        b"\x32" + bytes([3 + 2 + len(payload)]) + b"\x00\x01t\x12\x34" + payload)
    assert mq.encode_publish(b"", "é")[:5] == b"\x30\x04\x00\x02\xc3"
    assert mq.encode_publish(bytearray(b"x")) == b"\x30\x06\x00\x03rpcx"
    assert mq.encode_publish(memoryview(b"xy")) == b"\x30\x07\x00\x03rpcxy"


def test_control_packets(mq):
    assert mq.PINGREQ_PACKET == mq.encode_pingreq() == b"\xc0\x00"
    assert mq.PINGRESP_PACKET == mq.encode_pingresp() == b"\xd0\x00"
    assert mq.DISCONNECT_PACKET == mq.encode_disconnect() == b"\xe0\x00"
    assert mq.encode_connack() == b"\x20\x02\x00\x00"
    stream = (mq.PINGREQ_PACKET + mq.PINGRESP_PACKET + mq.encode_connack(5, True)
              + mq.DISCONNECT_PACKET)
    assert decode_all(mq, stream) == [(mq.PINGREQ,), (mq.PINGRESP,), (mq.CONNACK, True, 5),
                                      (mq.DISCONNECT,)]


@pytest.mark.parametrize("remaining,header", [
    (5, b"\x05"), (127, b"\x7f"), (128, b"\x80\x01"), (16383, b"\xff\x7f"),
    (16384, b"\x80\x80\x01"), (2097151, b"\xff\xff\x7f"), (2097152, b"\x80\x80\x80\x01"),
])
def test_remaining_length_varint(mq, remaining, header):
    payload = b"p" * (remaining - 5)
    packet = mq.encode_publish(payload)
    assert packet[1:1 + len(header)] == header
    assert len(packet) == 1 + len(header) + remaining
    assert decode_all(mq, packet) == [(mq.PUBLISH, "rpc", payload, 0, None)]


def test_encoder_errors(mq):
    for bad in (dict(qos=3), dict(qos=-1), dict(qos=1, packet_id=70000),
                dict(qos=1, packet_id=-1)):
        with pytest.raises(FrameError):
            mq.encode_publish(b"x", "rpc", **bad)
    with pytest.raises(FrameError):
        mq.encode_publish(b"x", "t" * 65536)
    with pytest.raises(FrameError):
        mq.encode_connect("id", 70000)
    with pytest.raises(TypeError):
        mq.encode_publish("not bytes")


# decoder ----------------------------------------------------------------------

def test_publish_qos_and_packet_id(mq):
    stream = (mq.encode_publish(b"a", "rpc", 1, 7) + mq.encode_publish(b"b", "x/y", 2, 65535)
              + bytes([0x3B, 0x06, 0x00, 0x01, 0x74, 0x00, 0x01, 0x7A]))  # dup+qos1+retain
    assert decode_all(mq, stream) == [(mq.PUBLISH, "rpc", b"a", 1, 7),
                                      (mq.PUBLISH, "x/y", b"b", 2, 65535),
                                      (mq.PUBLISH, "t", b"z", 1, 1)]


def test_connect_with_will_user_password(mq):
    body = (b"\x00\x04MQTT\x04" + bytes([0x80 | 0x40 | 0x04 | 0x02]) + b"\x00\x0a"
            + b"\x00\x03cid" + b"\x00\x01w" + b"\x00\x02wp" + b"\x00\x04user" + b"\x00\x02pw")
    assert decode_all(mq, b"\x10" + bytes([len(body)]) + body) == [(mq.CONNECT, "cid", 10, "user", b"pw")]
    v31 = b"\x00\x06MQIsdp\x03\x02\x00\x00\x00\x01c"
    assert decode_all(mq, b"\x10" + bytes([len(v31)]) + v31) == [(mq.CONNECT, "c", 0, None, None)]


def test_acks_and_other_types(mq):
    stream = (b"\x40\x02\x00\x05" + b"\x50\x02\x00\x06" + b"\x62\x02\x00\x07"
              + b"\x70\x02\x00\x08" + b"\x82\x03\x01\x02\x03" + b"\x90\x00")
    assert decode_all(mq, stream) == [(mq.PUBACK, 5), (mq.PUBREC, 6), (mq.PUBREL, 7),
                                      (mq.PUBCOMP, 8), (mq.SUBSCRIBE, b"\x01\x02\x03"),
                                      (mq.SUBACK, b"")]


def test_incremental_and_buffered(mq):
    packet = mq.encode_publish(b"x" * 300)
    dec = mq.MqttDecoder()
    assert dec.feed(packet[:1]) == [] and dec.buffered == 1
    assert dec.feed(packet[1:2]) == [] and dec.buffered == 2   # varint not complete yet
    assert dec.feed(packet[2:100]) == [] and dec.buffered == 100
    assert dec.feed(bytearray(packet[100:]) + packet[:3]) == [(mq.PUBLISH, "rpc", b"x" * 300,
                                                                 0, None)]
    assert dec.buffered == 3
    assert dec.feed(memoryview(packet[3:])) == [(mq.PUBLISH, "rpc", b"x" * 300, 0, None)]
    assert dec.buffered == 0
    assert dec.feed(b"") == []


def test_pkg_size(mq):
    packet = mq.encode_publish(b"x" * 95)          # remaining length 100
    assert decode_all(mq, packet, 100) == [(mq.PUBLISH, "rpc", b"x" * 95, 0, None)]
    # refused as soon as the length is known, before the body arrives
    assert "exceeds pkg_size" in decode_error(mq, packet[:2], 99)


@pytest.mark.parametrize("data,reason", [
    (b"\x30\xff\xff\xff\xff\x01", "longer than 4 bytes"),
    (b"\x30\x80\x80\x80\x80", "longer than 4 bytes"),
    (b"\x00\x00", "reserved"),
    (b"\xf0\x00", "reserved"),
    (b"\xc1\x00", "flags"),
    (b"\x12\x00", "flags"),
    (b"\x60\x02\x00\x01", "flags"),
    (b"\x36\x05\x00\x01t\x00\x01", "QoS 3"),
    (b"\x30\x01\x00", "too short"),
    (b"\x30\x03\x00\x05t", "overruns"),
    (b"\x32\x04\x00\x01t\x00", "packet id"),
    (b"\x30\x04\x00\x02\xff\xfe", "UTF-8"),
    (b"\xc0\x01\x00", "must be empty"),
    (b"\xe0\x01\x00", "must be empty"),
    (b"\x20\x01\x00", "CONNACK"),
    (b"\x40\x01\x00", "want 2"),
    (b"\x10\x02\x00\x04", "CONNECT too short"),
    (b"\x10\x0c\x00\x04MQTX\x04\x02\x00\x00\x00\x00", "protocol name"),
    (b"\x10\x0c\x00\x04MQTT\x05\x02\x00\x00\x00\x00", "protocol level"),
    (b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x00\x00\x05", "overruns"),
    (b"\x10\x0a\x00\x04MQTT\x04\x02\x00\x00", "fields"),
    (b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x00\x00\x02\xc3\x28", "UTF-8"),
])
def test_malformed_packets(mq, data, reason):
    assert reason in decode_error(mq, data)
    assert issubclass(FrameError, RpcError)


def test_error_after_good_packets_in_the_same_feed(mq):
    with pytest.raises(FrameError):
        mq.MqttDecoder().feed(mq.PINGREQ_PACKET + b"\x00\x00")


# both cores, any split -------------------------------------------------------------

_topic = st.text(max_size=20).filter(lambda t: len(t.encode("utf-8")) < 0xFFFF)
_packet = st.one_of(
    st.tuples(st.just("publish"), _topic, st.binary(max_size=300), st.integers(0, 2),
              st.integers(0, 0xFFFF)),
    st.tuples(st.just("connect"), st.text(max_size=30), st.integers(0, 0xFFFF),
              st.one_of(st.none(), st.text(max_size=20)),     # user name; a password needs one
              st.one_of(st.none(), st.binary(max_size=40))),
    st.tuples(st.just("connack"), st.integers(0, 255), st.booleans()),
    st.sampled_from([("pingreq",), ("pingresp",), ("disconnect",)]),
)


def _encode(mq, spec):
    kind = spec[0]
    if kind == "publish":
        _, topic, payload, qos, pid = spec
        return (mq.encode_publish(payload, topic, qos, pid),
                (mq.PUBLISH, topic, payload, qos, pid if qos else None))
    if kind == "connect":
        _, cid, keepalive, user, password = spec
        password = None if user is None else password
        return (mq.encode_connect(cid, keepalive, user, password),
                (mq.CONNECT, cid, keepalive, user, password))
    if kind == "connack":
        return mq.encode_connack(spec[1], spec[2]), (mq.CONNACK, spec[2], spec[1])
    return {"pingreq": (mq.PINGREQ_PACKET, (mq.PINGREQ,)),
            "pingresp": (mq.PINGRESP_PACKET, (mq.PINGRESP,)),
            "disconnect": (mq.DISCONNECT_PACKET, (mq.DISCONNECT,))}[kind]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=st.lists(_packet, max_size=12), cuts=st.lists(st.integers(0, 5000), max_size=12))
def test_any_split_gives_the_same_packets_in_both_cores(specs, cuts):
    for mq in [core_pkg.select(name).mqtt for name in CORES]:
        encoded = [_encode(mq, spec) for spec in specs]
        stream = b"".join(e[0] for e in encoded)
        expected = [e[1] for e in encoded]
        points = sorted({c % (len(stream) + 1) for c in cuts})
        dec = mq.MqttDecoder()
        got = []
        prev = 0
        for point in points + [len(stream)]:
            got += dec.feed(stream[prev:point])
            prev = point
        assert got == expected, mq.__name__
        assert dec.buffered == 0
    if len(CORES) == 2:
        py, cy = (core_pkg.select(name).mqtt for name in ("python", "cython"))
        assert [_encode(py, s)[0] for s in specs if s[0] != "connect"] == \
               [_encode(cy, s)[0] for s in specs if s[0] != "connect"]


def _outcome(mq, data, max_size):
    try:
        return ("ok", mq.MqttDecoder(max_size).feed(data))
    except FrameError:
        return ("error",)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=64), max_size=st.integers(0, 80))
def test_arbitrary_bytes_decode_alike_in_both_cores(data, max_size):
    py, cy = both()
    assert _outcome(py, data, max_size) == _outcome(cy, data, max_size)


@settings(max_examples=100, deadline=None)
@given(specs=st.lists(_packet, min_size=1, max_size=5), flip=st.integers(0, 10000),
       value=st.integers(0, 255))
def test_corrupted_streams_decode_alike_in_both_cores(specs, flip, value):
    py, cy = both()
    stream = bytearray(b"".join(_encode(py, s)[0] for s in specs))
    stream[flip % len(stream)] = value
    stream = bytes(stream)
    assert _outcome(py, stream, 1 << 20) == _outcome(cy, stream, 1 << 20)


# JSON strings and the payload JSON ---------------------------------------------------

_JSON_STRINGS = ["", "a", "run", "x" * 1000, 'a"b', "a\\b", "\x00", "\x1f" * 9, "tab\there",
                 "seven\n", "abcdefg\x7f", "é", "héllo wörld ✓ 日本語 🎉", "\ud800", "a" * 7 + '"',
                 "b" * 15 + "\\", "c" * 8 + "\n" + "d" * 8, " " * 16, "~" * 17, "!" * 8]


def test_json_string_is_json_encode_basestring(mq):
    import json.encoder
    for s in _JSON_STRINGS:
        assert mq.json_string(s) == json.encoder.encode_basestring(s), repr(s)

    class Sub(str):
        pass
    assert mq.json_string(Sub("ab")) == '"ab"'
    assert type(mq.json_string(Sub("ab"))) is str
    with pytest.raises(TypeError):
        mq.json_string(1)


_ascii_text = st.text(st.characters(max_codepoint=127), max_size=40)


@settings(max_examples=500, deadline=None)
@given(s=st.one_of(_ascii_text, st.text(max_size=40)))
def test_json_string_alike_in_both_cores(s):
    import json.encoder
    want = json.encoder.encode_basestring(s)
    for name in CORES:
        assert core_pkg.select(name).mqtt.json_string(s) == want, name


_json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30) | _ascii_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(value=_json_value)
def test_payload_json_is_the_json_module(value):
    """mqtt_acceptor's dumps (either core's strings) and loads: exactly json's text and value."""
    import json
    from pomelo_rpc.mqtt_json import core_dumps, dumps, loads
    want = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(value)
    assert dumps(value) == want
    for name in CORES:
        assert core_dumps(core_pkg.select(name))(value) == want, name
    data = want.encode("utf-8", "surrogatepass")
    assert repr(loads(data)) == repr(json.loads(data))


def test_payload_json_errors_are_the_json_module():
    import json
    from pomelo_rpc.mqtt_json import core_dumps, loads
    circular = []
    circular.append(circular)
    for name in CORES:
        fn = core_dumps(core_pkg.select(name))
        for bad, exc in ((circular, ValueError), (float("nan"), ValueError), (object(), TypeError),
                         ({(1, 2): 3}, TypeError), ([1, {"a": float("inf")}], ValueError)):
            with pytest.raises(exc):
                fn(bad)
        assert fn([1, [2, {"b": None}]]) == '[1,[2,{"b":null}]]'   # no marks left behind
    for data in (b'{"a":1}  \n', b"[1,2] x", b"", b"\xef\xbb\xbf{}", b'{"a":"\xed\xa0\x80"}',
                 b'{"a" : 1 }', b"[1e400]", b"[NaN]", b"{", b"[1,]", b'{"a":1}{', "[1]",
                 '{"x":"\\ud800"}'.encode()):
        try:
            want = ("ok", repr(json.loads(data)))
        except ValueError as exc:
            want = ("error", type(exc), str(exc))
        try:
            got = ("ok", repr(loads(data)))
        except ValueError as exc:
            got = ("error", type(exc), str(exc))
        assert got == want, data
