"""What a backend's forwardMessage is made of in the core, with each core and without
Node (tests/test_backend.py has it against a real pomelo cluster): the backend session
(``core.forward.new_session``: the same fields and behaviour whichever core made it)
and the answer's JSON (``core.mqtt.json_suffixed``: the same bytes as the codec's)."""

import json

import pytest

from pomelo_rpc import core as core_pkg
from pomelo_rpc.backend import BackendSession
from pomelo_rpc.mqtt_json import RawResults, json_codec

WIRE = {"id": 7, "frontendId": "connector-1", "uid": "u1", "settings": {"rid": "room1"}}


def test_a_session_from_the_wire(core):
    forward = core_pkg.select(core).forward
    app = object()
    settings = {"rid": "room1"}
    session = forward.new_session(BackendSession, app, dict(WIRE, settings=settings))
    assert type(session) is BackendSession
    assert (session.id, session.frontend_id, session.uid) == (7, "connector-1", "u1")
    assert session.settings is settings and session._app is app
    assert session.get("rid") == "room1" and session.get("x", 5) == 5
    session.set("x", 1)
    assert session.settings == {"rid": "room1", "x": 1}
    assert session.export() == {"id": 7, "frontendId": "connector-1", "uid": "u1",
                                "settings": {"rid": "room1", "x": 1}}
    session.uid = None
    assert session.uid is None
    # no attribute beyond a session's own, whichever core made it
    with pytest.raises(AttributeError):
        session.other = 1
    # no settings: an empty dict of its own per session
    one = forward.new_session(BackendSession, app, dict(WIRE, settings=None))
    two = forward.new_session(BackendSession, app, {"id": "s", "frontendId": "c"})
    assert one.settings == {} and two.settings == {} and one.settings is not two.settings
    assert (two.id, two.uid) == ("s", None)


@pytest.mark.parametrize("obj", [
    None, [1], "s", {}, {"id": 1}, {"frontendId": "c"}, {"id": "", "frontendId": "c"},
    {"id": 1.5, "frontendId": "c"}, {"id": 1, "frontendId": ""},
    {"id": 1, "frontendId": "c", "uid": [1]}, {"id": 1, "frontendId": "c", "settings": [1]},
])
def test_what_is_not_a_session(core, obj):
    assert core_pkg.select(core).forward.new_session(BackendSession, None, obj) is None


def test_sessions_made_by_either_core_are_the_same():
    cores = core_pkg.available()
    if len(cores) < 2:
        pytest.skip("only one core here")
    made = [core_pkg.select(name).forward.new_session(BackendSession, None, dict(WIRE))
            for name in cores]
    made.append(BackendSession(None, 7, "connector-1", "u1", {"rid": "room1"}))
    made.append(BackendSession.from_wire(None, dict(WIRE)))
    for session in made:
        assert type(session) is BackendSession
        assert session.export() == WIRE
        assert repr(session) == repr(made[0])


ANSWERS = [
    {}, {"code": 200, "x": 1, "y": 2}, {"code": 200, "players": ["u1", "u2"], "ok": True},
    {"f": 1.5, "n": None, "neg": -7, "big": 2 ** 63, "t": (1, "a")}, "text", 'quote " in',
    "é", [], None, 0.1, {"nested": {"a": [1, {"b": False}]}}, {1: "int key"},
    RawResults('{"already":1}'), {"s": "line\nbreak"},
]


@pytest.mark.parametrize("value", ANSWERS, ids=range(len(ANSWERS)))
def test_an_answer_is_the_codecs_json_and_its_suffix(core, value):
    c = core_pkg.select(core)
    codec = json_codec(c)
    data = c.mqtt.json_suffixed(value, codec, b",null")
    assert data == codec.dumps_bytes(value) + b",null"
    if type(value) is not RawResults:
        assert json.loads(b"[" + data + b"]") == [json.loads(json.dumps(value)), None]


def test_an_answer_json_cannot_carry_raises_as_the_codec_does(core):
    c = core_pkg.select(core)
    codec = json_codec(c)
    for value in ({"x": object()}, {"nan": float("nan")}, {(1, 2): "tuple key"}):
        with pytest.raises((TypeError, ValueError)) as got:
            c.mqtt.json_suffixed(value, codec, b",null")
        with pytest.raises(got.type):
            codec.dumps_bytes(value)
    with pytest.raises(TypeError):
        c.mqtt.json_suffixed({}, codec, None)


def test_the_keys_forward_message_reads_are_the_codecs_own(core):
    c = core_pkg.select(core)
    forward = c.forward
    keys = forward.keys_of(json_codec(c).loads(forward.KEYS_JSON))
    assert keys == forward.NAMES
    assert forward.keys_of({}) == forward.NAMES and forward.keys_of(None) == forward.NAMES
    # whatever objects the keys are, a session reads the same
    session = forward.new_session(BackendSession, None, dict(WIRE), keys)
    assert session.export() == WIRE


class Routes:
    """A handler table as ``backend.handlers.Handlers`` has it (a reload replaces it)."""

    server_type = "area"

    def __init__(self, routes):
        self.routes = routes


class Filters:
    befores: list = []
    afters: list = []


def test_a_route_served_again_reaches_the_handler_reloaded(core):
    c = core_pkg.select(core)
    handlers = Routes({"area.h.m": (lambda msg, session: {"v": 1}, False)})

    def slow(msg, session):
        return "slow"
    fwd = c.forward.Forwarder(None, handlers, Filters(), BackendSession, json_codec(c),
                              "notified", slow, None, None)

    def forward(route):
        answer = fwd.forwardMessage({"id": 1, "type": 0, "route": route, "body": {}},
                                    dict(WIRE))
        return answer if type(answer) is str else answer.data
    assert forward("area.h.m") == forward("area.h.m") == b'{"v":1},null'
    handlers.routes = {"area.h.m": (lambda msg, session: {"v": 2}, False)}
    assert forward("area.h.m") == b'{"v":2},null'
    handlers.routes = {}
    assert forward("area.h.m") == "slow"
    assert forward(12) == "slow"
