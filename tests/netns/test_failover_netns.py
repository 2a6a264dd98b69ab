"""Evidence 1 of issue 4 in its strict form, across network namespaces the
test builds (:mod:`rserpool.testing.netns`): a PE whose host crashes is
removed by the registrar **after the keep-alive timeout**, and the pool
user's session fails over to another PE without losing its state.

Every party is its own host on one bridge: the registrar (``rserpool
registrar``, short keep-alive timers), three PEs (``rserpool pe``, one per
host) and the pool user (the library's :class:`~rserpool.aio.user.PoolUser`
and :class:`~rserpool.aio.user.Session` in a helper process, below).

On loopback (``tests/integration/test_end_to_end.py``) a ``kill -9`` closes
the PE's sockets, so the registrar sees its association go at once and
removes the PE for "association lost".  Here the PE's host is unplugged
first (:meth:`~rserpool.testing.netns.Host.link_down`), then the PE is
killed: its kernel's FIN/RST go nowhere, as when a machine dies.  Only the
keep-alive can tell the registrar, and only the application's own request
timeout can tell the pool user (its TCP connection to the PE just stops
answering); the application then calls :meth:`Session.failover`, as the
library asks of it.

What is asserted:

* the registrar logs the PE's removal with reason ``keep-alive timeout``
  (never ``association lost``), no sooner than the keep-alive timeout
  after the unplug allows, and within interval + timeout (plus scheduling
  margin);
* ``rserpool resolve --json`` from the PU's host lists the three PEs before
  and only the two others after;
* the session fails over (the lost PE reported, another PE connected, the
  latest Cookie echoed to it), and the service's state carried in the
  Cookie goes on: the echo service's ``echo 1 <messages> <bytes>`` and the
  ping-pong service's ``PONG <seq> <count>`` count on from where the lost
  PE left off.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import pytest

from rserpool.testing import netns

pytestmark = pytest.mark.netns

RSERPOOL = [sys.executable, "-m", "rserpool"]
ASAP_PORT = 3863
REGISTRAR_ID = 0x7E00
PE_IDS = (0x7E0001, 0x7E0002, 0x7E0003)
POOLS = {"echo": "EchoPool", "pingpong": "PingPongPool"}
#: Registrar timers: a keep-alive 1 s after each ACK, 2 s to answer it.
KEEP_ALIVE_INTERVAL = 1.0
KEEP_ALIVE_TIMEOUT = 2.0
#: The pool user application's wait for an answer: its failover trigger.
ANSWER_TIMEOUT = 3.0
#: A keep-alive sent just before the unplug, whose ACK was still on its way,
#: times out at most one round trip (and the PE's turn-around) early.
ROUND_TRIP_SLACK = 0.25
#: Scheduling margin on the late side (two shared cores, many processes).
LATE_MARGIN = 2.0

# The pool user: a library session driven by commands appended to a file
# (one per line: "send <word>" or "quit").  One JSON line per event, with
# the wall-clock time.  Waiting for an answer longer than the answer timeout
# is the application's sign that the PE is gone: it fails over and sends the
# message again (the first copy went to a dead host).
PU_SESSION = r'''
import asyncio, json, sys, time
from rserpool.aio.user import (CookieReceived, FailoverCompleted, FailoverStarted, PoolUser,
                               RetryScheduled, SessionConnected, SessionFailed, SessionState)

registrar, pool, service, commands = sys.argv[1:5]
answer_timeout = float(sys.argv[5])


def emit(**record):
    record["time"] = time.time()
    print(json.dumps(record), flush=True)


def on_event(ev):
    if isinstance(ev, SessionConnected):
        emit(event="connected", pe=ev.element.identifier, cookie_echoed=ev.cookie_echoed)
    elif isinstance(ev, FailoverStarted):
        emit(event="failover-started", pe=ev.element.identifier, reason=ev.reason)
    elif isinstance(ev, FailoverCompleted):
        emit(event="failover-completed", pe=ev.element.identifier,
             previous=None if ev.previous is None else ev.previous.identifier,
             cookie_echoed=ev.cookie_echoed)
    elif isinstance(ev, CookieReceived):
        emit(event="cookie", cookie=ev.cookie.decode("ascii", "replace"))
    elif isinstance(ev, RetryScheduled):
        emit(event="retry", reason=ev.reason)
    elif isinstance(ev, SessionFailed):
        emit(event="failed", reason=ev.reason)


async def next_command(offset):
    while True:
        with open(commands, "rb") as f:
            f.seek(offset)
            data = f.read()
        if b"\n" in data:
            line = data[:data.index(b"\n")]
            return line.decode().strip(), offset + len(line) + 1
        await asyncio.sleep(0.05)


async def exchange(session, seq, word):
    if service == "pingpong":
        payload = b"PING %d %s" % (seq, word.encode())
        wanted = lambda a: a.startswith(b"PONG %d " % seq)
    else:
        payload = word.encode()
        wanted = lambda a: a == payload
    session.send(payload)
    for _ in range(10):
        try:
            while True:
                answer = await asyncio.wait_for(session.recv(), answer_timeout)
                if wanted(answer):
                    return answer
                emit(event="stray", answer=answer.decode("ascii", "replace"))
        except asyncio.TimeoutError:
            pe = session.element.identifier if session.element else None
            emit(event="timeout", pe=pe, state=session.state.value)
            if session.state is SessionState.ESTABLISHED:
                session.failover(reason=f"no answer within {answer_timeout:g} s")
                session.send(payload)
            # else: a failover is under way, the message waits in its queue
    raise SystemExit(f"no answer to {payload!r}")


async def main():
    async with PoolUser(registrars=[registrar], discovery=False, transport="tcp") as pu:
        session = await pu.connect_session(pool, on_event=on_event)
        offset, seq = 0, 0
        while True:
            command, offset = await next_command(offset)
            if command == "quit":
                break
            seq += 1
            answer = await exchange(session, seq, command.split(" ", 1)[1])
            emit(event="answer", seq=seq, answer=answer.decode("ascii", "replace"),
                 pe=session.element.identifier)
        await session.close()
        emit(event="closed")

asyncio.run(main())
'''


# --- helpers ---------------------------------------------------------------------------


def records(proc: netns.Process) -> list[dict[str, Any]]:
    return [json.loads(line) for line in proc.stdout().splitlines() if line.startswith("{")]


def wait_record(proc: netns.Process, predicate: Callable[[dict[str, Any]], bool], what: str,
                after: dict[str, Any] | None = None, timeout: float = 20.0) -> dict[str, Any]:
    """The first record of the pool user (after the record ``after``) that
    satisfies ``predicate``; waits for it."""
    def found() -> dict[str, Any] | None:
        recs = records(proc)
        start = recs.index(after) + 1 if after is not None else 0
        return next((r for r in recs[start:] if predicate(r)), None)
    return netns.wait_until(found, timeout=timeout, interval=0.05,
                            message=lambda: f"pool user: {what}\n{proc.describe()}")


def latest(proc: netns.Process, *recs: dict[str, Any]) -> dict[str, Any]:
    """Of ``recs``, the one the pool user printed last."""
    return max(recs, key=records(proc).index)


def command(path: Path, text: str) -> None:
    with open(path, "a") as f:
        f.write(text + "\n")


def resolve(host: netns.Host, registrar: netns.Host, pool: str) -> dict[str, Any]:
    """``rserpool resolve POOL --json`` on ``host``, asking ``registrar``."""
    return json.loads(host.check_output([
        *RSERPOOL, "resolve", pool, "--json", "--registrar", f"{registrar.address}:{ASAP_PORT}",
        "--no-discovery", "--transport", "tcp", "--items", "10"]))


def log_time(stamp: str) -> float:
    """The wall-clock time of a ``%(asctime)s`` stamp (local time, ms)."""
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def state_after(service: str, words: list[str]) -> tuple[str, str]:
    """(last answer, Cookie) the service gives after ``words`` in one session."""
    n = len(words)
    if service == "echo":
        return words[-1], f"echo 1 {n} {sum(len(w) for w in words)}"
    return f"PONG {n} {n} {words[-1]}", f"pingpong 1 {n}"


# --- the test ----------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["echo", "pingpong"])
def test_crashed_pe_host_is_removed_after_the_keep_alive_timeout_and_the_session_fails_over(
        network: netns.Network, service: str) -> None:
    pool = POOLS[service]
    reg_host = network.add_host("reg")
    pe_hosts = {ident: network.add_host(f"pe{n}") for n, ident in enumerate(PE_IDS, 1)}
    pu_host = network.add_host("pu")
    registrar_address = f"{reg_host.address}:{ASAP_PORT}"

    registrar = reg_host.run([
        *RSERPOOL, "registrar", "--address", reg_host.address, "--asap-port", str(ASAP_PORT),
        "--transport", "tcp", "--no-announce", "--registrar-id", hex(REGISTRAR_ID),
        "--keep-alive-interval", str(KEEP_ALIVE_INTERVAL),
        "--keep-alive-timeout", str(KEEP_ALIVE_TIMEOUT)], name="registrar")
    registrar.wait_output(rf"ASAP over TCP on {re.escape(registrar_address)}\b")

    pes = {ident: host.run([
        *RSERPOOL, "pe", "--pool", pool, "--service", service, "--transport", "tcp",
        "--registrar", registrar_address, "--no-discovery", "--identifier", hex(ident), "-v"],
        name="pe") for ident, host in pe_hosts.items()}
    for ident, host in pe_hosts.items():
        registrar.wait_output(rf"PE 0x{ident:08x} registered in pool '{pool}': "
                              rf"tcp {re.escape(host.address)}:", timeout=30)
    before = resolve(pu_host, reg_host, pool)
    assert sorted(e["identifier"] for e in before["elements"]) == sorted(PE_IDS), before

    # The pool user's session, and three messages through it.
    commands = network.workdir / "pu-commands"
    commands.touch()
    pu = pu_host.run_python("-c", PU_SESSION, registrar_address, pool, service, str(commands),
                            str(ANSWER_TIMEOUT), name="pu")
    connected = wait_record(pu, lambda r: r["event"] == "connected", "connected")
    victim = connected["pe"]
    assert victim in PE_IDS and not connected["cookie_echoed"]
    survivors = sorted(set(PE_IDS) - {victim})
    words: list[str] = []
    last: dict[str, Any] = connected
    for word in ("one", "two", "three"):
        words.append(word)
        answer_text, cookie = state_after(service, words)
        command(commands, f"send {word}")
        answer = wait_record(pu, lambda r: r["event"] == "answer", f"answer to {word}",
                             after=last)
        assert (answer["answer"], answer["pe"]) == (answer_text, victim), answer
        # the PE sends its Cookie right after the answer: have it before going on
        got = wait_record(pu, lambda r: r["event"] == "cookie", f"cookie {cookie!r}",
                          after=last)
        assert got["cookie"] == cookie, (got, cookie)
        last = latest(pu, answer, got)

    # The PE's host crashes: unplugged first (nothing it sends from now on
    # reaches anyone), then the PE is killed.
    unplugging = time.time()  # the link goes down inside the ip process, after this
    pe_hosts[victim].link_down()
    unplugged = time.time()
    assert pes[victim].kill() == -signal.SIGKILL
    assert not pe_hosts[victim].link_is_up()
    words.append("four")
    command(commands, "send four")

    # The registrar removes it for the keep-alive timeout, when that allows.
    removal = registrar.wait_output(
        rf"^(?P<time>\S+ \S+) INFO rserpool\.registrar: PE 0x{victim:08x} removed from "
        rf"pool '{pool}': (?P<reason>.*)$",
        timeout=KEEP_ALIVE_INTERVAL + KEEP_ALIVE_TIMEOUT + LATE_MARGIN + 10)
    assert removal["reason"] == "keep-alive timeout", removal.group(0)
    delay = log_time(removal["time"]) - unplugged
    # the lower bound from before the unplug (it only gets later), the upper
    # bound from after it
    earliest = log_time(removal["time"]) - unplugging
    assert KEEP_ALIVE_TIMEOUT - ROUND_TRIP_SLACK <= earliest, (
        f"removed {earliest:.3f} s after the unplug, sooner than the keep-alive timeout "
        f"({KEEP_ALIVE_TIMEOUT:g} s) allows")
    assert delay <= KEEP_ALIVE_INTERVAL + KEEP_ALIVE_TIMEOUT + LATE_MARGIN, (
        f"removed only {delay:.3f} s after the unplug")
    # ... and no longer offers it.
    after = resolve(pu_host, reg_host, pool)
    assert sorted(e["identifier"] for e in after["elements"]) == survivors, after
    assert all(e["addresses"] == [pe_hosts[e["identifier"]].address]
               for e in after["elements"]), after

    # The session notices the silence and fails over to another PE, echoing
    # its latest Cookie; the state goes on from where the lost PE left it.
    timeout = wait_record(pu, lambda r: r["event"] == "timeout", "answer timeout",
                          after=last)
    assert timeout["pe"] == victim and timeout["time"] - unplugged >= ANSWER_TIMEOUT - 0.5
    started = wait_record(pu, lambda r: r["event"] == "failover-started", "failover",
                          after=last)
    assert started["pe"] == victim and "no answer" in started["reason"], started
    completed = wait_record(pu, lambda r: r["event"] == "failover-completed",
                            "failover completed", after=started)
    assert completed["pe"] in survivors and completed["previous"] == victim, completed
    assert completed["cookie_echoed"], completed
    answer_text, cookie = state_after(service, words)
    answer = wait_record(pu, lambda r: r["event"] == "answer", "answer to four",
                         after=completed)
    assert (answer["answer"], answer["pe"]) == (answer_text, completed["pe"]), answer
    got = wait_record(pu, lambda r: r["event"] == "cookie", "cookie from the new PE",
                      after=completed)
    assert got["cookie"] == cookie, (got, cookie)
    last = latest(pu, answer, got)

    # It keeps going on the new PE.
    words.append("five")
    answer_text, cookie = state_after(service, words)
    command(commands, "send five")
    answer = wait_record(pu, lambda r: r["event"] == "answer", "answer to five", after=last)
    assert (answer["answer"], answer["pe"]) == (answer_text, completed["pe"]), answer
    got = wait_record(pu, lambda r: r["event"] == "cookie", f"cookie {cookie!r}", after=last)
    assert got["cookie"] == cookie, (got, cookie)
    command(commands, "quit")
    assert pu.wait(15) == 0, pu.describe()

    recs = records(pu)
    assert [r["seq"] for r in recs if r["event"] == "answer"] == [1, 2, 3, 4, 5]
    assert [r["event"] for r in recs].count("failover-completed") == 1, recs
    assert not [r for r in recs if r["event"] in ("failed", "stray")], recs
    # the crash was never seen as an association loss; the others stayed
    assert f"PE 0x{victim:08x} removed from pool '{pool}': association" not in registrar.output()
    assert registrar.alive and all(pes[i].alive for i in survivors), network.describe()
