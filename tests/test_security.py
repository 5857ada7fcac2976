"""Security (docs/security.md): TLS and mutual TLS, the auth_token handshake, the allow
list and max_connections, against real server processes, over real and raw sockets.

Certificates are made by the tests (pomelo_rpc.selfsigned, with the cryptography
package); nothing secret is committed. The hostile-input suite of
test_hostile_input.py runs here a second time against a TLS + auth_token server.
"""

import asyncio
import hmac
import ipaddress
import logging
import os
import socket
import struct
import time

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import CORES, ServerProcess
from pomelo_rpc import AuthenticationError, ConnectionLostError, RemoteError, client
from pomelo_rpc import core as core_pkg
from pomelo_rpc.core.frames import AUTH, AUTH_OK, CHALLENGE, HELLO
from pomelo_rpc.security import (check_auth, check_auth_ok, client_proof, client_ssl_context,
                                 new_nonce, parse_allow, peer_allowed, server_proof,
                                 token_bytes, warn_if_exposed)
from pomelo_rpc.selfsigned import make_certs
from test_hostile_input import (CLOSE_CASES, TEST_DIR, Steady, expect_closed, frame,
                                read_frame)
from test_reload_and_trace import SVC_V1, SVC_V2, until, write
# the hostile-input suite, collected here again: it runs against this module's
# ``server`` fixture, a TLS + auth_token server (see ``server`` below)
from test_hostile_input import (  # noqa: F401
    test_bad_calls_in_valid_frames_get_error_answers_on_a_live_connection,
    test_frame_over_pkg_size_is_refused_from_its_header,
    test_malformed_frames_close_only_that_connection,
    test_slow_clients_dribbling_bytes_do_not_stall_the_others,
    test_truncated_frame_then_close_is_logged_and_the_server_goes_on)

TOKEN = "correct horse battery staple"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A CA with its server and client certificates, and another CA's (untrusted) set."""
    return (make_certs(str(tmp_path_factory.mktemp("pki"))),
            make_certs(str(tmp_path_factory.mktemp("other-pki")), "untrusted"))


def tls_client_context(certs, with_cert=False):
    ca = certs[0]
    if with_cert:
        return client_ssl_context(ca.ca, ca.client_cert, ca.client_key)
    return client_ssl_context(ca.ca)


@pytest.fixture
def start(spawn, core, tmp_path, certs):
    """Start a server process of the core under test: ``tls`` ("", "tls", "mtls"),
    ``token`` (its auth_token, or None), more ``serve`` flags; its log goes to a file."""
    ca = certs[0]
    count = [0]

    def _start(*args, tls="", token=TOKEN, transport="native", **spawn_kw):
        count[0] += 1
        flags = list(args)
        if tls:
            flags += ["--tls-cert", ca.server_cert, "--tls-key", ca.server_key]
        if tls == "mtls":
            flags += ["--tls-ca", ca.ca]
        if token is not None:
            token_file = tmp_path / f"token-{count[0]}"
            token_file.write_text(token + "\n")
            flags += ["--auth-token-file", str(token_file)]
        log_path = tmp_path / f"server-{count[0]}.log"
        with open(log_path, "w") as log:
            srv = spawn(f"sec-{count[0]}", core=core, stderr=log, args=flags,
                        transport=transport, **spawn_kw)
        srv.log = log_path.read_text
        srv.transport = transport
        srv.client_opts = {"transport": transport}
        if tls:
            srv.client_opts["ssl"] = tls_client_context(certs, with_cert=tls == "mtls")
        if token is not None:
            srv.client_opts["auth_token"] = token
        return srv

    return _start


async def open_plain(port):
    return await asyncio.open_connection("127.0.0.1", port)


async def handshake(reader, writer, token=TOKEN):
    """Answer the server's challenge with the right proof; check the server's proof.
    Returns the AUTH frame sent (to replay it elsewhere)."""
    challenge = await read_frame(reader)
    assert challenge[0] == CHALLENGE and len(challenge[2]) == 32, challenge
    nonce = os.urandom(32)
    auth = frame([AUTH, client_proof(token.encode(), challenge[2], nonce), nonce])
    writer.write(auth)
    ok = await read_frame(reader)
    assert ok[0] == AUTH_OK, ok
    assert check_auth_ok(ok, token.encode(), challenge[2], nonce)
    return auth


@pytest.fixture
def server(start, certs):
    """test_hostile_input's ``server``, here a TLS + auth_token one: its raw connections
    (``open_raw``) and its clients (``client_opts``) go through TLS and the handshake."""

    def _server(*args):
        srv = start(*args, tls="tls")
        ctx = tls_client_context(certs)

        async def open_raw():
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", srv.port, ssl=ctx, server_hostname="127.0.0.1")
            await handshake(reader, writer)
            return reader, writer

        srv.open_raw = open_raw
        return srv

    return _server


def make_client(core, srv, **opts):
    """A client of ``srv`` with ``opts`` (not the server's ``client_opts``)."""
    opts.setdefault("transport", srv.transport)
    cli = client.create(core=core, timeout=5, connect_timeout=1.0, **opts)
    cli.add_proxies([{"namespace": "user", "server_type": "test", "path": TEST_DIR}])
    cli.add_servers([srv.info])
    return cli


async def call_once(core, srv, **opts):
    """Start a client, call echo once, stop it: ``(result or exception, seconds)``."""
    cli = make_client(core, srv, **opts)
    await cli.start()
    t0 = time.monotonic()
    try:
        result = await cli.proxies.user.test.service.echo(None, "hello")
    except Exception as exc:      # the outcome under test
        result = exc
    elapsed = time.monotonic() - t0
    await cli.stop()
    return result, elapsed


async def assert_still_serving(core, srv):
    result, _ = await call_once(core, srv, **srv.client_opts)
    assert result == "hello", result


# the handshake on raw sockets ------------------------------------------------

def auth_frame(token, server_nonce):
    nonce = os.urandom(32)
    return frame([AUTH, client_proof(token, server_nonce, nonce), nonce])


async def test_unauthenticated_connections_get_no_table_no_answer_and_are_closed(start, core):
    srv = start("--handshake-timeout", "0.5")
    echo_call = frame([2, 1, "user", "service", "echo", ["x"]])
    # a good handshake, recorded to be replayed on another connection
    reader, writer = await open_plain(srv.port)
    recorded = await handshake(reader, writer)
    assert (await read_frame(reader))[0] == HELLO
    writer.close()
    # what each connection sends after the challenge (a function of the server's nonce)
    cases = {
        "a valid call frame, no handshake": lambda nonce: echo_call,
        "a recorded handshake answer, replayed": lambda nonce: recorded,
        "garbage": lambda nonce: os.urandom(64),
        "a frame header announcing 1 MB": lambda nonce: struct.pack(">I", 1 << 20),
        "a right proof followed by a call before the HELLO":
            lambda nonce: auth_frame(TOKEN.encode(), nonce) + echo_call,
        "a proof under another token": lambda nonce: auth_frame(b"guess", nonce),
        "ping": lambda nonce: frame([5]),
    }
    # and each hostile payload of test_hostile_input in place of the handshake
    cases.update({f"hostile: {name}": lambda nonce, p=payload: p
                  for name, payload in CLOSE_CASES.items()})
    nonces = set()
    async with Steady(core, srv):
        for name, make in cases.items():
            reader, writer = await open_plain(srv.port)
            try:
                challenge = await read_frame(reader)
                assert challenge is not None and challenge[0] == CHALLENGE, challenge
                nonces.add(challenge[2])
                writer.write(make(challenge[2]))
                await expect_closed(reader)
            except AssertionError as exc:
                raise AssertionError(f"{name}: {exc}") from None
            writer.close()
        # a client that connects and says nothing is closed after handshake_timeout
        reader, writer = await open_plain(srv.port)
        t0 = time.monotonic()
        assert (await read_frame(reader))[0] == CHALLENGE
        await expect_closed(reader)
        assert 0.4 < time.monotonic() - t0 < 2.0
        writer.close()
    assert len(nonces) == len(cases), "every challenge is fresh"
    assert srv.proc.poll() is None
    assert "refused connection from ('127.0.0.1'" in srv.log()
    await assert_still_serving(core, srv)


async def test_a_reload_sends_no_method_table_to_a_connection_still_proving_its_token(
        start, core, tmp_path):
    """reload_remotes sends the grown method table to connected clients; one still in
    its handshake gets nothing, and the new table once it has proven the token."""
    remote = tmp_path / "remote"
    remote.mkdir()
    write(str(remote / "svc.py"), SVC_V1)
    srv = start("--reload-remotes", "--reload-interval", "0.05", "--handshake-timeout", "30",
                server_type="t", remotes={"user": str(remote)})
    reader, writer = await open_plain(srv.port)
    challenge = await read_frame(reader)
    assert challenge[0] == CHALLENGE
    cli = client.create(core=core, auth_token=TOKEN)
    cli.add_servers([srv.info])
    await cli.start()

    async def fresh_served():
        try:
            return await cli.rpc_invoke(srv.server_id, {
                "namespace": "user", "server_type": "t", "service": "svc",
                "method": "fresh", "args": []}) == "fresh"
        except RemoteError:
            return False

    try:
        assert not await fresh_served()
        write(str(remote / "svc.py"), SVC_V2)
        await until(fresh_served, what="the reloaded method")
        with pytest.raises(asyncio.TimeoutError):        # not a byte to the unproven one
            await asyncio.wait_for(reader.read(1), 0.3)
        nonce = os.urandom(32)
        writer.write(frame([AUTH, client_proof(TOKEN.encode(), challenge[2], nonce), nonce]))
        assert (await read_frame(reader))[0] == AUTH_OK
        hello = await read_frame(reader)
        assert hello[0] == HELLO and ["user", "svc", "fresh"] in hello[2]
    finally:
        writer.close()
        await cli.stop()


@pytest.mark.parametrize("transport", ["native", "mqtt"])
async def test_wrong_or_missing_token_is_a_clear_error_and_others_are_served(start, core,
                                                                              transport):
    srv = start(transport=transport)
    async with Steady(core, srv) as steady:
        for opts in ({"auth_token": "wrong"}, {}):
            result, elapsed = await call_once(core, srv, **opts)
            assert isinstance(result, AuthenticationError), (opts, result)
            assert "auth_token" in str(result), result
            assert elapsed < 1.0, elapsed
    assert steady.calls > 0
    # a client with a token refuses a server without one (it cannot prove itself);
    # on mqtt such a server sends no CONNACK, so the connect times out
    plain = start(transport=transport, token=None)
    result, elapsed = await call_once(core, plain, auth_token=TOKEN)
    if transport == "native":
        assert isinstance(result, AuthenticationError) and "without proving" in str(result)
        assert elapsed < 1.0
    else:
        assert isinstance(result, ConnectionLostError) and "no CONNACK" in str(result)
        assert elapsed < 1.5
    await assert_still_serving(core, srv)


# TLS ------------------------------------------------------------------------------

@pytest.mark.parametrize("transport", ["native", "mqtt"])
async def test_tls_mismatches_are_clear_errors_within_connect_timeout(start, core, certs,
                                                                       transport):
    tls = start(tls="tls", token=None, transport=transport)
    mtls = start(tls="mtls", token=None, transport=transport)
    plain = start(token=None, transport=transport)
    untrusted = client_ssl_context(certs[1].ca)
    cases = [
        ("plaintext client, TLS server", tls, {}),
        ("TLS client, plaintext server", plain, {"ssl": tls_client_context(certs)}),
        ("untrusted server certificate", tls, {"ssl": untrusted}),
        ("mutual TLS without a client certificate", mtls, {"ssl": tls_client_context(certs)}),
    ]
    for name, srv, opts in cases:
        result, elapsed = await call_once(core, srv, **opts)
        assert isinstance(result, ConnectionLostError), (name, result)
        assert elapsed < 1.5, (name, elapsed)
        if name == "untrusted server certificate":
            assert isinstance(result, AuthenticationError)
            assert "CERTIFICATE_VERIFY_FAILED" in str(result), result
        if transport == "native" and name == "TLS client, plaintext server":
            assert isinstance(result, AuthenticationError) and "TLS" in str(result), result
        if name == "plaintext client, TLS server":
            assert "ssl=" in str(result), result
        if name == "mutual TLS without a client certificate":
            assert "client certificates" in str(result), result
    for srv in (tls, mtls, plain):
        assert srv.proc.poll() is None
        await assert_still_serving(core, srv)
    # mutual TLS: the server sees the client's certificate
    ctx = tls_client_context(certs, with_cert=True)
    reader, writer = await asyncio.open_connection("127.0.0.1", mtls.port, ssl=ctx,
                                                   server_hostname="127.0.0.1")
    assert writer.get_extra_info("peercert")["subject"] == (
        (("commonName", "pomelo_rpc test server"),),)
    writer.close()


# allow and max_connections -----------------------------------------------------

async def test_allow_list_closes_others_at_accept_with_rate_limited_logs(start, core):
    srv = start("--allow", "10.0.0.0/8", "--allow", "192.168.1.7", token=None)
    t0 = time.monotonic()
    for _ in range(20):
        reader, writer = await open_plain(srv.port)
        await expect_closed(reader)        # no HELLO: closed at once
        writer.close()
    elapsed = time.monotonic() - t0
    lines = srv.log().count("not in the allow list")
    assert 1 <= lines <= 1 + elapsed, (lines, elapsed)    # 20 refusals, a line a second
    allowed = start("--allow", "10.0.0.0/8,127.0.0.0/8", token=None)
    await assert_still_serving(core, allowed)


async def test_max_connections_closes_new_ones_past_the_bound(start, core):
    srv = start("--max-connections", "3", token=None)
    held = []
    for _ in range(3):
        reader, writer = await open_plain(srv.port)
        assert (await read_frame(reader))[0] == HELLO
        held.append(writer)
    reader, writer = await open_plain(srv.port)
    await expect_closed(reader)
    writer.close()
    assert "max_connections (3) reached" in srv.log()
    held.pop().close()
    deadline = time.monotonic() + 5
    while True:                         # the server sees the close, then admits again
        reader, writer = await open_plain(srv.port)
        hello = await read_frame(reader, timeout=2)
        writer.close()
        if hello is not None:
            assert hello[0] == HELLO
            break
        assert time.monotonic() < deadline, "a slot never came free"
        await asyncio.sleep(0.05)
    for w in held:
        w.close()


def test_allow_parsing_and_matching():
    nets = parse_allow("10.0.0.0/8, 192.168.1.7")
    assert nets == [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("192.168.1.7/32")]
    assert peer_allowed(nets, ("10.2.3.4", 5000))
    assert peer_allowed(nets, ("::ffff:192.168.1.7", 5000, 0, 0))   # IPv4-mapped IPv6
    assert not peer_allowed(nets, ("192.168.1.8", 5000))
    assert not peer_allowed(nets, None)
    assert parse_allow(["::1", ipaddress.ip_network("fd00::/8")]) == [
        ipaddress.ip_network("::1/128"), ipaddress.ip_network("fd00::/8")]
    with pytest.raises(ValueError, match="not an IP address"):
        parse_allow(["example.com"])


def test_token_is_a_non_empty_str_or_bytes():
    assert token_bytes("s\u00e9cret") == "s\u00e9cret".encode() and token_bytes(None) is None
    with pytest.raises(ValueError, match="empty"):
        token_bytes("")
    with pytest.raises(TypeError, match="str or bytes"):
        token_bytes(12345)


def test_warning_for_a_non_loopback_bind_without_protection(caplog):
    log = logging.getLogger("pomelo_rpc.test_security")
    with caplog.at_level(logging.WARNING, logger=log.name):
        assert warn_if_exposed(log, "0.0.0.0", {})
        assert warn_if_exposed(log, None, {})
        for host in ("127.0.0.1", "::1", "localhost"):
            assert not warn_if_exposed(log, host, {})
        for opts in ({"auth_token": "t"}, {"allow": "10.0.0.0/8"}, {"ssl": object()}):
            assert not warn_if_exposed(log, "0.0.0.0", opts)
    assert caplog.text.count("anyone who can reach this port") == 2


# fuzz of the handshake frames on both cores ---------------------------------------

_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 63, 2 ** 64 - 1) | st.binary(max_size=40)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4), max_leaves=10)
_near_auth = st.tuples(st.sampled_from([AUTH, AUTH_OK, CHALLENGE, 0, 1]),
                       st.binary(min_size=30, max_size=34) | _values,
                       st.binary(min_size=30, max_size=34) | _values).map(list)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(msg=st.one_of(_near_auth, _values), token=st.binary(min_size=1, max_size=16))
def test_fuzz_any_first_frame_is_refused_by_both_cores_unless_it_proves_the_token(msg, token):
    server_nonce = new_nonce()
    for name in CORES:
        frames = core_pkg.select(name).frames
        data = frames.encode([msg] if not isinstance(msg, list) else msg)
        decoded = frames.FrameDecoder(256).feed(data) if len(data) <= 260 else None
        if decoded is None:
            continue
        assert check_auth(decoded[0], token, frames.AUTH, server_nonce) is None
    # the right proof passes; any one byte changed in it does not
    client_nonce = new_nonce()
    proof = client_proof(token, server_nonce, client_nonce)
    flip = len(repr(msg)) % 32
    bad = proof[:flip] + bytes([proof[flip] ^ 1]) + proof[flip + 1:]
    for name in CORES:
        frames = core_pkg.select(name).frames
        good = frames.FrameDecoder(256).feed(frames.encode_auth(proof, client_nonce))[0]
        assert check_auth(good, token, frames.AUTH, server_nonce) == client_nonce
        assert check_auth([AUTH, bad, client_nonce], token, AUTH, server_nonce) is None
        assert check_auth(good, token, AUTH, new_nonce()) is None     # another connection


@settings(max_examples=100, deadline=None)
@given(nonce=st.binary(min_size=32, max_size=32), proof=st.binary(min_size=32, max_size=32),
       cut=st.integers(0, 120))
def test_fuzz_handshake_frames_are_the_same_bytes_on_both_cores(nonce, proof, cut):
    encoded = {name: [core_pkg.select(name).frames.encode_challenge(nonce),
                      core_pkg.select(name).frames.encode_auth(proof, nonce),
                      core_pkg.select(name).frames.encode_auth_ok(proof)] for name in CORES}
    first = encoded[CORES[0]]
    assert all(frames == first for frames in encoded.values())
    assert first[0] == frame([CHALLENGE, 1, nonce])
    assert msgpack.unpackb(first[1][4:]) == [AUTH, proof, nonce]
    stream = b"".join(first)
    for name in CORES:
        dec = core_pkg.select(name).frames.FrameDecoder(256)
        cut_at = min(cut, len(stream))
        got = dec.feed(stream[:cut_at]) + dec.feed(stream[cut_at:])
        assert got == [[CHALLENGE, 1, nonce], [AUTH, proof, nonce], [AUTH_OK, proof]]
    assert hmac.compare_digest(server_proof(b"k", nonce, proof), server_proof(b"k", nonce, proof))
    assert server_proof(b"k", nonce, proof) != client_proof(b"k", nonce, proof)


@pytest.fixture(scope="module", params=CORES)
def token_server(request, tmp_path_factory):
    """One server process with an auth_token per core, for the fuzz below."""
    token_file = tmp_path_factory.mktemp("fuzz") / "token"
    token_file.write_text(TOKEN)
    srv = ServerProcess("fuzz-1", "test", {"user": TEST_DIR}, core=request.param,
                        args=["--auth-token-file", str(token_file)])
    srv.start()
    yield srv
    srv.kill()


def _recv_all(sock):
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
    except ConnectionResetError:
        return data


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=st.one_of(st.binary(max_size=300), _values.map(frame), _near_auth.map(frame),
                       st.lists(_near_auth.map(frame), min_size=2, max_size=3).map(b"".join)))
def test_fuzz_any_first_bytes_to_a_real_server_get_the_challenge_and_nothing_else(
        token_server, first):
    """Whatever a client sends first (then closing its side), the server process sends
    its challenge and nothing more: no method table, no answer."""
    with socket.create_connection(("127.0.0.1", token_server.port), timeout=5) as sock:
        data = b""
        while len(data) < 4 or len(data) < 4 + struct.unpack(">I", data[:4])[0]:
            data += sock.recv(4096)
        challenge = msgpack.unpackb(data[4:])
        assert challenge[0] == CHALLENGE and len(challenge[2]) == 32
        try:
            sock.sendall(first)
            sock.shutdown(socket.SHUT_WR)
        except OSError:              # the server has reset the connection already
            pass
        assert _recv_all(sock) == b""           # nothing more: no table, no answer
    assert token_server.proc.poll() is None
