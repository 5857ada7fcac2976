"""What a request costs a server that sleeps between requests: the floor under
bench/backend.py's CPU per request.

    python bench/wakeups.py [--seconds 3] [--pace 0.0004] [--rounds 2]

Two servers, each in a process of its own, one loopback connection to each from this
process (blocking socket, TCP_NODELAY): ``raw``, a bare uvloop echo (a 61-byte answer
per 290-byte message), and ``area``, the demo area server alone (``server.create(
handlers=...)``, mqtt, no registry) answering the forwardMessage a pomelo 2.2.7
connector sends for ``area.playerHandler.move`` (bench_instructions.FORWARD). Each
message is awaited for its answer, then the next is sent:

- ``busy``: at once, so the server mostly finds the next message there (no sleep);
- ``paced``: ``--pace`` s later, so the server sleeps in epoll between messages and is
  woken for each, as the area of bench/backend.py is at ~2,500 requests/s from 100
  players;
- ``pieces`` (area): paced, each PUBLISH written in five writes as pomelo's mqtt client
  writes it (fixed header, remaining length, topic length, topic, payload).

``area-batch`` is the area with ``sched_batch=True`` (its loop's thread under
SCHED_BATCH: woken, it does not preempt the writer, here this process);
``area-coalesce`` with ``read_coalesce=0.001`` (one client waiting for each answer:
its reads should not be held).

Printed per cell, medians of ``--rounds``: messages/s, the server's user and system
CPU µs per message (/proc/<pid>/stat) and its wake-ups (voluntary context switches);
with ``--syscalls``, its system calls per message counted by ``perf stat`` (root or
perf_event_paranoid <= -1; its tracepoints add to the CPU figures).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from pomelo_rpc.bench_instructions import AREA_HANDLERS, FORWARD  # noqa: E402
from pomelo_rpc.core.mqtt import MqttDecoder, encode_connect, encode_publish  # noqa: E402
from pomelo_rpc.processes import child_env  # noqa: E402

MESSAGE = b"x" * 290
ANSWER = 61
SYSCALLS = ("read", "write", "writev", "epoll_pwait")
WARM_UP = 300


class Echo(asyncio.Protocol):
    """The raw server: a 61-byte answer per 290 bytes read."""

    def connection_made(self, transport):
        self.transport = transport
        self.held = 0

    def data_received(self, data):
        self.held += len(data)
        while self.held >= len(MESSAGE):
            self.held -= len(MESSAGE)
            self.transport.write(MESSAGE[:ANSWER])


async def serve(kind):
    """The server process: print the port, serve until killed."""
    if kind == "raw":
        srv = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
    else:
        from pomelo_rpc import server
        gw = server.create(transport="mqtt", handlers=AREA_HANDLERS,
                           server_info={"id": "area-1", "server_type": "area"},
                           sched_batch=kind == "area-batch",
                           read_coalesce=0.001 if kind == "area-coalesce" else 0.0)
        await gw.start()
        port = gw.port
    print(port, flush=True)
    await asyncio.Event().wait()


def usage(pid):
    """(user s, system s, voluntary context switches) of process ``pid``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    switches = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/status") as f:
            switches += sum(int(line.split(":")[1]) for line in f
                            if line.startswith("voluntary_ctxt_switches"))
    return int(fields[11]) / tick, int(fields[12]) / tick, switches


def pieces_of(packet):
    """``packet`` (a PUBLISH on "rpc") cut as pomelo's mqtt client writes it."""
    length_end = 1 + next(i for i in range(1, 5) if not packet[i] & 0x80)
    cuts = [0, 1, length_end, length_end + 2, length_end + 5, len(packet)]
    return [packet[a:b] for a, b in zip(cuts, cuts[1:])]


def cell(kind, mode, seconds, pace, syscalls=False):
    """One server process, one connection: {rate, user, system, wakeups, syscalls...}."""
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", kind],
                            stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        port = int(proc.stdout.readline())
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        decoder = MqttDecoder()
        if kind != "raw":
            sock.sendall(encode_connect())

        def one(n):
            if kind == "raw":
                sock.sendall(MESSAGE)
                got = 0
                while got < ANSWER:
                    got += len(sock.recv(4096))
                return
            packet = encode_publish(FORWARD % (n, n))
            for piece in (pieces_of(packet) if mode == "pieces" else [packet]):
                sock.sendall(piece)
            while not decoder.feed(sock.recv(65536)):
                pass

        for n in range(1, WARM_UP):
            one(n)
        perf = None
        if syscalls:
            events = ",".join(f"syscalls:sys_enter_{s}" for s in SYSCALLS)
            perf = subprocess.Popen(["perf", "stat", "-x,", "-e", events, "-p", str(proc.pid)],
                                    stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    text=True)
            time.sleep(0.2)
        before = usage(proc.pid)
        started = time.monotonic()
        n = WARM_UP
        while time.monotonic() - started < seconds:
            one(n)
            n += 1
            if mode != "busy":
                time.sleep(pace)
        elapsed = time.monotonic() - started
        after = usage(proc.pid)
        count = n - WARM_UP
        row = {"rate": count / elapsed, "user": (after[0] - before[0]) / count * 1e6,
               "system": (after[1] - before[1]) / count * 1e6,
               "wakeups": (after[2] - before[2]) / count}
        if perf is not None:
            perf.send_signal(2)
            for line in perf.communicate()[1].splitlines():
                fields = line.split(",")
                if len(fields) > 2 and fields[2].startswith("syscalls:sys_enter_"):
                    try:
                        row[fields[2][19:]] = float(fields[0]) / count
                    except ValueError:
                        pass
        sock.close()
        return row
    finally:
        proc.kill()
        proc.wait()


CELLS = [("raw", "busy"), ("raw", "paced"), ("area", "busy"), ("area", "paced"),
         ("area", "pieces"), ("area-batch", "paced"), ("area-batch", "pieces"),
         ("area-coalesce", "paced"), ("area-coalesce", "pieces")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--pace", type=float, default=0.0004,
                        help="s between an answer and the next message (paced cells)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--syscalls", action="store_true",
                        help="count the server's system calls (perf stat)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        import uvloop
        uvloop.run(serve(args.serve))
        return 0
    if args.syscalls and shutil.which("perf") is None:
        raise SystemExit("--syscalls needs perf (Debian: apt-get install linux-perf)")
    rows = {c: [] for c in CELLS}
    for r in range(args.rounds):
        for c in (CELLS if r % 2 == 0 else CELLS[::-1]):
            rows[c].append(cell(*c, args.seconds, args.pace, args.syscalls))
    print(f"medians of {args.rounds} rounds, {args.seconds:g} s each, paced: {args.pace:g} s "
          f"between an answer and the next message; load {os.getloadavg()[0]:.2f}")
    cols = [k for k in rows[CELLS[0]][0] if k != "rate"]
    print("| server | messages | per s | " + " | ".join(f"{c} /msg" for c in cols) + " |")
    print("|---|---|---|" + "---|" * len(cols))
    for (kind, mode), results in rows.items():
        med = {k: statistics.median(r.get(k, 0.0) for r in results) for k in results[0]}
        print(f"| {kind} | {mode} | {med['rate']:,.0f} | "
              + " | ".join(f"{med.get(c, 0.0):.2f}" for c in cols) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
