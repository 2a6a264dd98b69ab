"""The ENRP core (rserpool.protocol.enrp) driven in memory: several cores
linked by a tiny network that moves each core's sends to the others and
advances ``now`` to the next deadline.  No sockets, no sleeps.  Every test
runs on the compiled handlespace and on its pure twin."""

from __future__ import annotations

import pytest

from conftest import implementations
from rserpool.config import RegistrarConfig
from rserpool.constants import EnrpType, PolicyType as PT, UpdateAction
from rserpool.handlespace import TIMER_NONE
from rserpool.protocol import enrp as E
from rserpool.protocol.enrp import (
    MAX_HT_RESPONSE_BYTES, MULTICAST, PEER_TRANSITIONS, EnrpServer, PeerInput, PeerState)
from rserpool.wire import (
    HandleTableRequest, HandleTableResponse, HandleUpdate, InitTakeover, ListRequest,
    PoolElement, PoolPolicy, Presence, SctpTransport, ServerInformation, TakeoverServer,
    TcpTransport, decode_message, encode_message)

A, B, C, D = 0x30, 0x10, 0x20, 0x40
HOSTILE = 0x66

FAST = dict(peer_heartbeat_interval=1.0, peer_max_time_last_heard=2.0,
            peer_max_time_no_response=1.0, mentor_discovery_timeout=1.5,
            takeover_expiry_interval=2.0, presence_multicast=False)


@pytest.fixture(params=implementations("handlespace", "rserpool.handlespace._handlespace_py"))
def hsmod(request):
    return request.param


def pe(ident, home=0, *, life=30000, port=7000):
    return PoolElement(ident, home, life, TcpTransport(port, ["10.0.0.9"], 0),
                       PoolPolicy(PT.ROUND_ROBIN, ()),
                       TcpTransport(40000 + ident % 20000, ["10.0.0.9"], 0))


class Net:
    """Cores on an in-memory network.  In core X, the association to Y is the
    key ``("assoc", Y)``; multicast goes to every other live core."""

    def __init__(self, hsmod, **config):
        self.hsmod = hsmod
        self.config = RegistrarConfig(**{**FAST, **config})
        self.now = 0.0
        self.nodes: dict[int, EnrpServer] = {}
        self.alive: set[int] = set()
        self.events: dict[int, list] = {}
        self.keepalives: dict[int, list] = {}
        self.log: list[tuple[int, object, bytes]] = []   # every send (src, key, data)
        self.drop = lambda src, dst, data: False
        self.down: set[frozenset] = set()               # cut links
        self.connected: set[frozenset] = set()

    def add(self, rid, **config):
        cfg = self.config.replace(**config) if config else self.config
        hs = self.hsmod.Handlespace(own_id=rid, seed=rid)
        core = EnrpServer(cfg, rid, hs, seed=rid, now=self.now)
        core.set_local_endpoint([f"10.0.0.{rid}"], 9901)
        self.nodes[rid] = core
        self.alive.add(rid)
        self.events[rid] = []
        self.keepalives[rid] = []
        return core

    def connect(self, a, b):
        pair = frozenset((a, b))
        if pair in self.connected:
            return
        self.connected.add(pair)
        self.nodes[a].peer_connected(("assoc", b), self.now, server_id=None)
        self.nodes[b].peer_connected(("assoc", a), self.now, server_id=None)

    def mesh(self, *ids):
        for i, a in enumerate(ids):
            for b in ids[i + 1:]:
                self.connect(a, b)

    @classmethod
    def meshed(cls, hsmod, ids, *, until=5.0, **config):
        """Cores ``ids``, fully meshed, run until ``until`` (start-up over)."""
        net = cls(hsmod, **config)
        for rid in ids:
            net.add(rid)
        net.mesh(*ids)
        net.run_until(until)
        return net

    def register_range(self, rid, handle, idents, **kw):
        """:meth:`register` for each identifier in ``idents``."""
        for ident in idents:
            self.register(rid, handle, ident, **kw)

    def kill(self, rid):
        self.alive.discard(rid)

    def hs(self, rid):
        return self.nodes[rid].handlespace

    def register(self, rid, handle, ident, **kw):
        """A local ASAP registration at ``rid`` (its home), then the update."""
        hs = self.hs(rid)
        hs.register(handle, pe(ident, rid, **kw), self.now, home_registrar=rid,
                    association=("pe", ident), timer=TIMER_NONE)
        self.nodes[rid].local_registered(handle, hs.get(handle, ident), self.now)

    def deregister(self, rid, handle, ident):
        entry = self.hs(rid).deregister(handle, ident)
        self.nodes[rid].local_deregistered(handle, ident, entry, self.now)

    def flush(self):
        for _ in range(100000):
            moved = False
            for src in sorted(self.alive):
                core = self.nodes[src]
                for key, data in core.pop_sends():
                    moved = True
                    self.log.append((src, key, data))
                    if key == MULTICAST:
                        for dst in sorted(self.alive - {src}):
                            if frozenset((src, dst)) not in self.down:
                                self.nodes[dst].presence_datagram(
                                    data, (f"10.0.0.{src}", 9901), self.now)
                        continue
                    dst = key[1]
                    if (dst in self.alive and frozenset((src, dst)) not in self.down
                            and not self.drop(src, dst, data)):
                        self.nodes[dst].receive(("assoc", src), data, self.now)
                for ev in core.pop_events():
                    self.events[src].append((self.now, ev))
                    if isinstance(ev, E.PeerConnectRequested) and ev.peer_id in self.alive:
                        pair = frozenset((src, ev.peer_id))
                        if pair not in self.connected:
                            self.connected.add(pair)
                            core.peer_connected(("assoc", ev.peer_id), self.now,
                                                server_id=ev.peer_id)
                            self.nodes[ev.peer_id].peer_connected(("assoc", src), self.now)
                            moved = True
                self.keepalives[src].extend(core.pop_keepalives_to_send())
            if not moved:
                return
        raise AssertionError("network does not settle")

    def run_until(self, t):
        self.flush()
        while True:
            dues = [(d, r) for r in self.alive
                    if (d := self.nodes[r].next_deadline()) is not None]
            if not dues:
                break
            due = min(d for d, _ in dues)
            if due > t:
                break
            self.now = max(self.now, due)
            for d, r in sorted(dues, key=lambda x: x[1]):
                if d <= self.now:
                    self.nodes[r].handle_timer(self.now)
            self.flush()
        self.now = t
        self.flush()

    def of(self, rid, cls):
        return [ev for _, ev in self.events[rid] if isinstance(ev, cls)]

    def table(self, rid):
        hs = self.hs(rid)
        out = set()
        for handle in hs.pools():
            for entry in hs.pool_elements(handle):
                out.add((handle, entry.identifier, entry.home_registrar))
        return out

    def assert_converged(self, *ids):
        first = ids[0]
        for rid in ids:
            self.hs(rid).check()
        for rid in ids[1:]:
            assert self.table(rid) == self.table(first), (hex(rid), hex(first))
            assert self.hs(rid).checksums() == self.hs(first).checksums()


def sent(net, src, mtype):
    return [(key, data) for s, key, data in net.log if s == src and data[0] == mtype]


# ---- the transition table ------------------------------------------------------


def test_transition_table_is_complete_and_points_at_actions():
    for (state, inp), (action, nxt) in PEER_TRANSITIONS.items():
        assert hasattr(EnrpServer, "_a_" + action), action
        assert state is not PeerState.REMOVED
    # Every live state has a timer transition, so no deadline can stall.
    for state in (PeerState.ALIVE, PeerState.PROBING, PeerState.TAKING_OVER,
                  PeerState.CONCEDED):
        assert (state, PeerInput.TIMER) in PEER_TRANSITIONS
    assert "digraph" in E.transitions_as_dot()


def test_constructor_checks_id(hsmod):
    with pytest.raises(ValueError):
        EnrpServer(RegistrarConfig(), 0, hsmod.Handlespace(), seed=1)


# ---- presence, discovery, loss ------------------------------------------------


def test_static_peers_discover_each_other_and_stay_alive(hsmod):
    net = Net(hsmod)
    for rid in (A, B, C):
        net.add(rid)
    net.mesh(A, B, C)
    net.run_until(60.0)
    for rid in (A, B, C):
        core = net.nodes[rid]
        others = {A, B, C} - {rid}
        assert core.peers() == {o: PeerState.ALIVE for o in others}
        assert not core.startup
        assert net.of(rid, E.StartupFinished)
        assert not net.of(rid, E.PeerLost)
        assert not net.of(rid, E.PeerUnresponsive)
        assert not net.of(rid, E.PeerMisbehaved)
    # Presences carry the sender's ownership checksum (0xFFFF: owns nothing).
    presences = [decode_message(d, "enrp") for _, _, d in net.log if d[0] == EnrpType.PRESENCE]
    assert presences and all(p.checksum == 0xFFFF for p in presences)
    assert all(p.server_info.server_id == p.sender_id for p in presences)


def test_no_periodic_presence_during_startup_and_jittered_heartbeat(hsmod):
    net = Net(hsmod, presence_multicast=True, peer_heartbeat_interval=4.0,
              peer_max_time_last_heard=10.0, mentor_discovery_timeout=3.0)
    net.add(A)
    net.run_until(2.9)
    assert not sent(net, A, EnrpType.PRESENCE)
    net.run_until(400.0)
    multicast = [d for s, key, d in net.log if s == A and key == MULTICAST]
    assert all(decode_message(d, "enrp").receiver_id == 0 for d in multicast)
    assert 85 <= len(multicast) <= 115           # ~ (400 - 3) / 4
    # The gaps between heartbeats: step a fresh core through its deadlines.
    core = EnrpServer(net.config.replace(peer_heartbeat_interval=4.0,
                                         mentor_discovery_timeout=3.0),
                      A, hsmod.Handlespace(own_id=A), seed=5)
    now, gaps = 3.0, []
    core.handle_timer(now)
    for _ in range(200):
        due = core.next_deadline()
        gaps.append(due - now)
        now = due
        core.handle_timer(now)
    assert all(3.5 - 1e-9 <= g <= 4.5 + 1e-9 for g in gaps)
    assert max(gaps) - min(gaps) > 0.5          # really randomised


def test_multicast_discovery_asks_the_driver_to_connect(hsmod):
    net = Net(hsmod, presence_multicast=True)
    for rid in (A, B):
        net.add(rid)
    net.run_until(20.0)
    assert net.nodes[A].peers() == {B: PeerState.ALIVE}
    assert net.nodes[B].peers() == {A: PeerState.ALIVE}
    req = net.of(A, E.PeerConnectRequested) + net.of(B, E.PeerConnectRequested)
    assert req and all(r.port == 9901 and r.addresses[0].startswith("10.0.0.") for r in req)
    assert net.of(A, E.PeerAppeared)[0].via == "multicast"


def test_peer_loss_probe_then_removed_without_pes(hsmod):
    net = Net(hsmod)
    net.add(A)
    net.add(B)
    net.mesh(A, B)
    net.run_until(10.0)
    net.kill(B)
    net.run_until(30.0)
    cfg = net.config
    unresponsive = [t for t, ev in net.events[A] if isinstance(ev, E.PeerUnresponsive)]
    lost = [(t, ev) for t, ev in net.events[A] if isinstance(ev, E.PeerLost)]
    assert len(unresponsive) == 1 and len(lost) == 1
    assert lost[0][1] == E.PeerLost(B, "no response")
    assert lost[0][0] - unresponsive[0] == pytest.approx(cfg.peer_max_time_no_response)
    assert 10.0 < unresponsive[0] <= 10.0 + cfg.peer_max_time_last_heard
    assert net.nodes[A].peers() == {}
    # The probe was a Presence with R=1.
    probes = [decode_message(d, "enrp") for _, d in sent(net, A, EnrpType.PRESENCE)]
    assert any(p.reply_required and p.receiver_id == B for p in probes)
    assert not net.of(A, E.TakeoverStarted)   # nothing to take over


def test_list_request_introduces_third_peer(hsmod):
    net = Net(hsmod)
    for rid in (A, B, C):
        net.add(rid)
    net.connect(A, B)
    net.connect(B, C)      # A and C only learn of each other through B's list
    net.run_until(20.0)
    assert set(net.nodes[A].peers()) == {B, C}
    assert set(net.nodes[C].peers()) == {A, B}
    assert any(ev.peer_id == C for ev in net.of(A, E.PeerConnectRequested)) or \
        any(ev.peer_id == A for ev in net.of(C, E.PeerConnectRequested))


# ---- start-up: mentor and handle table download -------------------------------------


@pytest.mark.parametrize("limit", [16, 128])
def test_mentor_download_in_pages(hsmod, limit):
    net = Net(hsmod, max_elements_per_ht_request=limit)
    net.add(A)
    net.add(B)
    net.mesh(A, B)
    net.run_until(5.0)
    for i in range(1, 201):
        net.register(A, b"pool-%d" % (i % 7), 0x1000 + i)
    for i in range(1, 101):
        net.register(B, b"other-pool-%02d" % (i % 3), 0x9000 + i)
    net.run_until(10.0)
    net.assert_converged(A, B)
    start = net.now
    net.add(C)
    net.connect(C, A)
    net.connect(C, B)
    net.run_until(start + 30.0)
    mentor = net.nodes[C].mentor
    assert mentor in (A, B) and net.of(C, E.MentorChosen) == [E.MentorChosen(mentor)]
    (done,) = [ev for ev in net.of(C, E.HandleTableDownloaded) if not ev.own_children_only]
    assert done.peer_id == mentor and done.count == 300
    responses = [(key, d) for s, key, d in net.log
                 if s == mentor and key == ("assoc", C)
                 and d[0] == EnrpType.HANDLE_TABLE_RESPONSE]
    assert len(responses) == done.pages >= 300 // limit
    for _, data in responses:
        assert len(data) <= MAX_HT_RESPONSE_BYTES
        msg = decode_message(data, "enrp")
        assert sum(len(pes) for _, pes in msg.entries) <= limit
    assert [decode_message(d, "enrp").more for _, d in responses] == \
        [True] * (len(responses) - 1) + [False]
    requests = [decode_message(d, "enrp") for s, k, d in net.log
                if s == C and d[0] == EnrpType.HANDLE_TABLE_REQUEST]
    assert not requests[0].own_children_only
    assert net.of(C, E.StartupFinished) == [E.StartupFinished(mentor)]
    net.assert_converged(A, B, C)
    # Non-owned entries carry expiry timers (registration life).
    entry = net.hs(C).get(b"pool-1", 0x1001)
    assert entry.home_registrar == A and entry.deadline is not None


def test_without_mentor_serves_alone(hsmod):
    net = Net(hsmod)
    core = net.add(A)
    assert core.startup
    net.run_until(net.config.mentor_discovery_timeout + 0.01)
    assert not core.startup and core.mentor is None
    assert net.of(A, E.StartupFinished) == [E.StartupFinished(None)]


def test_ht_request_from_a_non_peer_is_served_without_making_it_a_peer(hsmod):
    """``rserpool hsdump`` asks without a Presence: it gets the table, paged,
    and does not become a peer (no updates, no takeover candidate)."""
    net = Net(hsmod, max_elements_per_ht_request=2)
    core = net.add(A)
    for ident in (1, 2, 3):
        net.register(A, b"P", ident)
    core.pop_sends()
    got = []
    for _ in range(3):
        core.receive("stranger", encode_message(HandleTableRequest(HOSTILE, A)), 0.0)
        ((key, data),) = core.pop_sends()
        msg = decode_message(data, "enrp")
        assert key == "stranger" and not msg.rejected and msg.receiver_id == HOSTILE
        got += [pe.identifier for _, pes in msg.entries for pe in pes]
        if not msg.more:
            break
    assert got == [1, 2, 3] and not msg.more
    assert HOSTILE not in core.peers()
    net.register(A, b"P", 4)
    assert all(key != "stranger" for key, _ in core.pop_sends())


def test_lost_association_probes_at_once(hsmod):
    """Ours: a peer whose last association goes down is probed now (and a
    reconnect requested) instead of after max-time-last-heard."""
    net = Net(hsmod)
    a = net.add(A)
    net.add(B)
    net.mesh(A, B)
    net.run_until(1.0)
    assert a.peers()[B] is PeerState.ALIVE
    a.pop_events()
    for key in a.peer_keys(B):
        a.peer_disconnected(key, net.now)
    assert a.peers()[B] is PeerState.PROBING
    events = a.pop_events()
    assert E.PeerUnresponsive(B) in events
    assert any(type(ev) is E.PeerConnectRequested and ev.peer_id == B for ev in events)
    assert a.next_deadline() <= net.now + net.config.peer_max_time_no_response


def test_big_pe_still_progresses(hsmod):
    """A PE whose parameter alone is near the size cap goes out one per page."""
    net = Net(hsmod)
    net.add(A)
    net.add(B)
    net.mesh(A, B)
    net.run_until(5.0)
    hs = net.hs(A)
    for i in range(1, 6):
        addresses = [f"10.1.{i}.{j}" for j in range(1, 60)]
        asap = SctpTransport(4000, [f"fd00::{i}:{j}" for j in range(1, 2 + 60 * (i == 3))])
        big = PoolElement(i, A, 30000, SctpTransport(7000, addresses),
                          PoolPolicy(PT.ROUND_ROBIN, ()), asap)
        hs.register(b"big", big, net.now, home_registrar=A, timer=TIMER_NONE)
    core = net.nodes[B]
    core.receive(("assoc", A), encode_message(Presence(A, B, 0x1234, None)), net.now)
    mark = len(net.log)
    net.run_until(net.now + 5.0)
    net.assert_converged(A, B)
    pages = [decode_message(d, "enrp") for s, k, d in net.log[mark:]
             if s == A and d[0] == EnrpType.HANDLE_TABLE_RESPONSE]
    sizes = [(len(encode_message(m)), sum(len(p) for _, p in m.entries)) for m in pages]
    assert len(pages) >= 3 and sum(n for _, n in sizes) == 5
    assert all(size <= MAX_HT_RESPONSE_BYTES or n == 1 for size, n in sizes)
    assert any(size > MAX_HT_RESPONSE_BYTES for size, _ in sizes)  # the huge one, alone


def test_own_multicast_looped_back_is_silent(hsmod):
    net = Net(hsmod, presence_multicast=True)
    core = net.add(A)
    net.run_until(3.0)
    ((key, data),) = [(k, d) for s, k, d in net.log if s == A][:1]
    assert key == MULTICAST
    core.presence_datagram(data, ("10.0.0.48", 9901), net.now)
    assert core.peers() == {} and not core.pop_events()


def test_silent_sync_is_abandoned_and_stale_cursor_restarts(hsmod):
    net = Net.meshed(hsmod, (A, B), max_elements_per_ht_request=4)
    net.register_range(A, b"P", range(1, 21))
    net.run_until(6.0)
    # B asks for a resync but A's responses are lost after the first page.
    pages = []
    net.drop = lambda s, d, data: (data[0] == EnrpType.HANDLE_TABLE_RESPONSE
                                   and (pages.append(data) or len(pages) > 1))
    net.nodes[B].receive(("assoc", A), encode_message(Presence(A, B, 0x1234, None)), net.now)
    net.run_until(net.now + 10.0)
    assert net.of(B, E.SyncAbandoned) == [E.SyncAbandoned(A, "no response")]
    assert net.table(B) == net.table(A)       # nothing swept by the broken sync
    # Next time, A starts over (its cursor is stale), so the audit is complete.
    net.drop = lambda *a: False
    net.nodes[B].receive(("assoc", A), encode_message(Presence(A, B, 0x1234, None)), net.now)
    net.run_until(net.now + 3.0)
    done = net.of(B, E.AuditCompleted)
    assert done and done[-1] == E.AuditCompleted(A, 20, 0)
    net.assert_converged(A, B)


# ---- handle updates ------------------------------------------------------------------


def test_handle_updates_keep_handlespaces_equal(hsmod):
    net = Net.meshed(hsmod, (A, B, C))
    for k, rid in enumerate((A, B, C)):
        for i in range(1, 41):
            net.register(rid, b"pool-%d" % (i % 4), (k + 1) << 16 | i)
    net.run_until(6.0)
    net.assert_converged(A, B, C)
    for k, rid in enumerate((A, B, C)):
        for i in range(1, 41, 3):
            net.deregister(rid, b"pool-%d" % (i % 4), (k + 1) << 16 | i)
    net.run_until(7.0)
    net.assert_converged(A, B, C)
    assert len(net.table(A)) == 3 * (40 - 14)
    assert {home for _, _, home in net.table(B)} == {A, B, C}
    # Re-registration (ADD again) refreshes the expiry timer at the peers.
    before = net.hs(B).get(b"pool-2", 1 << 16 | 2).deadline
    net.now = 8.0
    net.register(A, b"pool-2", 1 << 16 | 2)
    net.flush()
    assert net.hs(B).get(b"pool-2", 1 << 16 | 2).deadline > before
    net.run_until(30.0)
    assert not any(net.of(r, E.AuditMismatch) for r in (A, B, C))


def test_updates_about_our_own_pes_are_ignored(hsmod):
    net = Net(hsmod)
    net.add(A)
    net.add(B)
    net.mesh(A, B)
    net.run_until(5.0)
    net.register(A, b"P", 7)
    net.flush()
    core = net.nodes[A]
    core.receive(("assoc", B), encode_message(HandleUpdate(B, A, UpdateAction.DEL_PE, b"P",
                                                           pe(7, A))), net.now)
    core.receive(("assoc", B), encode_message(HandleUpdate(B, A, UpdateAction.ADD_PE, b"P",
                                                           pe(7, B))), net.now)
    net.flush()
    assert net.hs(A).get(b"P", 7).home_registrar == A
    assert [ev.reason for ev in net.of(A, E.UpdateRefused)] == ["PE owned by us"] * 2


# ---- audit ----------------------------------------------------------------------------


def test_audit_repairs_a_lost_add_and_sweeps_a_ghost(hsmod):
    net = Net.meshed(hsmod, (A, B))
    net.register_range(A, b"P", range(1, 31))
    net.run_until(6.0)
    net.assert_converged(A, B)
    # Lose one ADD and one DEL from A to B.
    lost = []

    def drop(src, dst, data):
        if src == A and dst == B and data[0] == EnrpType.HANDLE_UPDATE and not lost:
            lost.append(data)
            return True
        return False

    net.drop = drop
    net.register(A, b"Q", 100)          # B misses this ADD
    net.flush()
    lost_del = []
    net.drop = lambda s, d, data: (s == A and d == B and data[0] == EnrpType.HANDLE_UPDATE
                                   and not lost_del.append(data))
    net.deregister(A, b"P", 5)          # B misses this DEL: a ghost
    net.flush()
    net.drop = lambda *a: False
    assert (b"Q", 100, A) not in net.table(B) and (b"P", 5, A) in net.table(B)
    mark = len(net.log)
    net.run_until(net.now + 3.0)        # at least one Presence from A
    (mismatch,) = net.of(B, E.AuditMismatch)[:1]
    assert mismatch.peer_id == A and mismatch.reported == net.hs(A).checksum(A)
    (done,) = net.of(B, E.AuditCompleted)
    assert done == E.AuditCompleted(A, 30, 1)
    own = [decode_message(d, "enrp") for s, k, d in net.log[mark:]
           if s == B and d[0] == EnrpType.HANDLE_TABLE_REQUEST]
    assert own and all(r.own_children_only for r in own)
    net.assert_converged(A, B)
    net.run_until(net.now + 20.0)
    assert len(net.of(B, E.AuditMismatch)) == 1     # converged: no further resync


def test_partition_heals_by_audit(hsmod):
    net = Net.meshed(hsmod, (A, B), peer_max_time_last_heard=30.0,
                     peer_max_time_no_response=30.0)
    net.register_range(A, b"P", range(1, 21))
    net.register_range(B, b"P", range(1001, 1021))
    net.run_until(6.0)
    net.down.add(frozenset((A, B)))
    for i in range(1, 21, 2):
        net.deregister(A, b"P", i)
        net.deregister(B, b"P", 1000 + i)
    net.register_range(A, b"R", range(50, 60))
    net.register_range(B, b"R", range(1050, 1060))
    net.run_until(20.0)
    assert net.table(A) != net.table(B)
    net.down.clear()
    net.run_until(20.0 + 2 * 1.125 + 0.5)   # two heartbeat cycles
    net.assert_converged(A, B)
    assert len(net.table(A)) == 2 * (10 + 10)


# ---- takeover ---------------------------------------------------------------------------


def test_single_survivor_takes_over(hsmod):
    net = Net.meshed(hsmod, (A, B))
    net.register_range(A, b"P", range(1, 26))
    net.run_until(6.0)
    net.kill(A)
    net.run_until(20.0)
    assert net.of(B, E.TakeoverStarted) == [E.TakeoverStarted(A, ())]
    assert net.of(B, E.TakeoverWon) == [E.TakeoverWon(A, 25)]
    assert net.of(B, E.TakeoverCompleted) == [E.TakeoverCompleted(A, B, 25)]
    assert {(k.pool_handle, k.identifier) for k in net.keepalives[B]} == \
        {(b"P", i) for i in range(1, 26)}
    assert all(k.asap_transport is not None for k in net.keepalives[B])
    assert net.hs(B).checksums() == {B: net.hs(B).checksum(B)}
    assert net.nodes[B].peers() == {}
    net.hs(B).check()


def test_two_survivors_exactly_one_wins_lower_id(hsmod):
    net = Net.meshed(hsmod, (A, B, C))
    for i in range(1, 41):
        net.register(A, b"P%d" % (i % 3), i)
    net.run_until(6.0)
    net.kill(A)
    net.run_until(25.0)
    # A real tie: both started at the same moment.
    starts = [(t, r) for r in (B, C) for t, ev in net.events[r]
              if isinstance(ev, E.TakeoverStarted)]
    assert len(starts) == 2 and starts[0][0] == starts[1][0]
    won = [(r, ev) for r in (B, C) for ev in net.of(r, E.TakeoverWon)]
    assert won == [(B, E.TakeoverWon(A, 40))]                  # lower ID wins
    assert net.of(C, E.TakeoverConceded) == [E.TakeoverConceded(A, B)]
    assert not net.keepalives[C]
    assert len(net.keepalives[B]) == 40
    net.assert_converged(B, C)
    assert {home for _, _, home in net.table(C)} == {B}
    assert A not in net.nodes[C].peers() and A not in net.nodes[B].peers()


def test_takeover_finishes_without_takeover_server(hsmod):
    """Digest 12 #3: the winner's Takeover Server never arrives (RSPLIB); the
    winner's Handle Updates move the PEs anyway."""
    net = Net.meshed(hsmod, (A, B, C))
    net.register_range(A, b"P", range(1, 31))
    net.run_until(6.0)
    net.drop = lambda s, d, data: data[0] == EnrpType.TAKEOVER_SERVER
    net.kill(A)
    net.run_until(40.0)
    assert net.of(B, E.TakeoverWon) == [E.TakeoverWon(A, 30)]
    assert not net.of(C, E.TakeoverCompleted)        # C never got Takeover Server
    assert net.of(C, E.PeerLost) == [E.PeerLost(A, "taken over", B)]
    net.assert_converged(B, C)
    assert {home for _, _, home in net.table(C)} == {B}


def test_takeover_does_not_wait_for_dead_peers(hsmod):
    """Two registrars die at once; the survivor takes over both."""
    net = Net.meshed(hsmod, (A, B, C))
    net.register_range(A, b"P", range(1, 11))
    net.register_range(C, b"P", range(101, 111))
    net.run_until(6.0)
    net.kill(A)
    net.kill(C)
    net.run_until(30.0)
    assert sorted(ev.target for ev in net.of(B, E.TakeoverWon)) == [C, A]
    assert {home for _, _, home in net.table(B)} == {B}
    assert len(net.table(B)) == 20


def test_takeover_abandoned_when_an_ack_is_missing(hsmod):
    net = Net.meshed(hsmod, (A, B, C))
    net.register_range(A, b"P", range(1, 6))
    net.run_until(6.0)
    # C keeps hearing A (asymmetric failure): C refuses to ack B.
    net.down.add(frozenset((A, B)))
    net.run_until(30.0)
    assert net.of(B, E.TakeoverStarted)
    assert net.of(C, E.TakeoverRefused)
    (abandoned,) = net.of(B, E.TakeoverAbandoned)[:1]
    assert abandoned.missing == (C,)
    assert not net.of(B, E.TakeoverWon)
    assert {home for _, _, home in net.table(C)} == {A}    # nothing stolen


def test_target_heard_again_cancels_takeover(hsmod):
    net = Net(hsmod, peer_max_time_last_heard=2.0, peer_max_time_no_response=1.0,
              takeover_expiry_interval=5.0)
    for rid in (A, B, C):
        net.add(rid)
    net.mesh(A, B, C)
    net.run_until(5.0)
    net.register(A, b"P", 1)
    net.run_until(6.0)
    # C stops acking, so B's takeover of A stays open; then A comes back.
    net.down.add(frozenset((A, B)))
    net.drop = lambda s, d, data: data[0] == EnrpType.INIT_TAKEOVER_ACK
    t0 = net.now
    while not net.of(B, E.TakeoverStarted):
        t0 += 0.25
        net.run_until(t0)
    net.down.clear()
    net.run_until(t0 + 3.0)
    assert net.of(B, E.TakeoverCancelled) == [E.TakeoverCancelled(A)]
    assert net.nodes[B].peers()[A] is PeerState.ALIVE
    assert not net.of(B, E.TakeoverWon)
    net.assert_converged(A, B, C)


def test_init_takeover_of_ourselves_answers_with_presence(hsmod):
    net = Net.meshed(hsmod, (A, B))
    core = net.nodes[A]
    core.pop_sends()
    core.receive(("assoc", B), encode_message(InitTakeover(B, A, A)), net.now)
    out = [decode_message(d, "enrp") for _, d in core.pop_sends()]
    assert [type(m) for m in out] == [Presence]


# ---- hostile peers -----------------------------------------------------------------------


def hostile_setup(hsmod):
    net = Net.meshed(hsmod, (A, B))
    net.register_range(B, b"P", range(1, 11))
    net.register_range(A, b"P", range(101, 111))
    net.run_until(6.0)
    core = net.nodes[A]
    key = ("assoc", HOSTILE)
    core.peer_connected(key, net.now)
    info = ServerInformation(HOSTILE, SctpTransport(9901, ["10.0.0.66"], 0))
    core.receive(key, encode_message(Presence(HOSTILE, A, 0xFFFF, info)), net.now)
    core.pop_sends()
    assert HOSTILE in core.peers()
    return net, core, key


def test_presence_with_our_own_id_is_ignored(hsmod):
    net, core, key = hostile_setup(hsmod)
    before = core.peers()
    info = ServerInformation(A, SctpTransport(9901, ["10.0.0.99"], 0))
    core.receive("evil", encode_message(Presence(A, A, 0x1234, info, True)), net.now)
    core.presence_datagram(encode_message(Presence(A, 0, 0x1234, info)), ("10.0.0.99", 9901),
                           net.now)
    assert core.peers() == before
    kinds = [ev.kind for ev in core.pop_events() if isinstance(ev, E.PeerMisbehaved)]
    assert kinds == ["own-id", "own-id"]
    assert not core.pop_sends()


def test_forged_updates_are_refused(hsmod):
    net, core, key = hostile_setup(hsmod)
    table = net.table(A)
    forged = [
        HandleUpdate(HOSTILE, A, UpdateAction.ADD_PE, b"P", pe(3, B)),        # home != sender
        HandleUpdate(HOSTILE, A, UpdateAction.ADD_PE, b"P", pe(3, HOSTILE)),  # steal B's PE
        HandleUpdate(HOSTILE, A, UpdateAction.DEL_PE, b"P", pe(4, B)),        # delete B's PE
        HandleUpdate(HOSTILE, A, UpdateAction.ADD_PE, b"P", pe(101, HOSTILE)),  # steal ours
        HandleUpdate(HOSTILE, A, UpdateAction.DEL_PE, b"P", pe(102, A)),      # delete ours
        HandleUpdate(HOSTILE, A, UpdateAction.ADD_PE, b"P", pe(500, 0)),      # home 0
        HandleUpdate(B, A, UpdateAction.ADD_PE, b"P", pe(501, B)),            # spoofed sender
        TakeoverServer(HOSTILE, A, B),                                        # B is alive
        TakeoverServer(HOSTILE, A, A),                                        # we are alive
        HandleTableResponse(HOSTILE, A, [(b"P", [pe(600, HOSTILE)])]),        # unsolicited
    ]
    for msg in forged:
        core.receive(key, encode_message(msg), net.now)
    core.receive(key, encode_message(InitTakeover(HOSTILE, A, B)), net.now)
    out = [decode_message(d, "enrp") for _, d in core.pop_sends()]
    assert not any(m.TYPE == EnrpType.INIT_TAKEOVER_ACK for m in out)   # B is alive
    events = core.pop_events()
    refused = [ev.reason for ev in events if isinstance(ev, E.UpdateRefused)]
    assert refused == ["update for a PE homed elsewhere", f"PE owned by live peer 0x{B:08x}",
                       f"PE owned by live peer 0x{B:08x}", "PE owned by us", "PE owned by us",
                       "home registrar 0"]
    assert [ev.kind for ev in events if isinstance(ev, E.PeerMisbehaved)] == \
        ["sender-mismatch", "unsolicited"]
    assert len([ev for ev in events if isinstance(ev, E.TakeoverRefused)]) == 3
    assert net.table(A) == table
    net.hs(A).check()
    # The scope keeps working: A and B still agree, nothing ghosted.
    net.run_until(net.now + 10.0)
    net.assert_converged(A, B)


def test_garbage_never_raises(hsmod):
    net, core, key = hostile_setup(hsmod)
    table = net.table(A)
    good = encode_message(HandleUpdate(HOSTILE, A, UpdateAction.ADD_PE, b"X", pe(900, HOSTILE)))
    samples = [b"", b"\x00", b"\xff\x00\x00\x10" + bytes(12), b"\x04\x00\x00\x08",
               good[:-3], good[:20], b"\x01\x00\xff\xff" + bytes(60),
               b"\x0b\x00\x00\x0c" + bytes(8),       # unknown ENRP type
               bytes(range(256))]
    for i in range(len(good)):
        mutated = bytearray(good)
        mutated[i] ^= 0xA5
        samples.append(bytes(mutated))
    for data in samples:
        core.receive(key, data, net.now)
        core.receive("new-key", data, net.now)
        core.presence_datagram(data, ("10.9.9.9", 1), net.now)
    errors = [decode_message(d, "enrp") for _, d in core.pop_sends() if d[0] == EnrpType.ERROR]
    assert errors and all(e.causes for e in errors)
    assert not [ev for ev in core.pop_events()
                if isinstance(ev, E.PeerMisbehaved) and ev.kind == "internal-error"]
    net.hs(A).check()
    assert {x for x in net.table(A) if x[2] != HOSTILE} == table
    # An ENRP Error is never answered.
    core.receive(key, encode_message(errors[0].replace(sender_id=HOSTILE, receiver_id=A)),
                 net.now)
    assert not core.pop_sends()


def test_handle_table_request_flood_is_bounded(hsmod):
    net, core, key = hostile_setup(hsmod)
    net.register_range(A, b"Q", range(200, 400))
    core.pop_sends()
    for own in (False, True) * 100:
        core.receive(key, encode_message(HandleTableRequest(HOSTILE, A, own)), net.now)
        ((k, data),) = core.pop_sends()
        assert k == key and len(data) <= MAX_HT_RESPONSE_BYTES
        assert not decode_message(data, "enrp").rejected
    assert len(core._ht_cursors) <= 1
    net.hs(A).check()


def test_own_children_response_naming_another_home_is_refused(hsmod):
    net, core, key = hostile_setup(hsmod)
    # Make A resync with the hostile peer: a Presence with a wrong checksum.
    core.receive(key, encode_message(Presence(HOSTILE, A, 0x1234, None)), net.now)
    reqs = [decode_message(d, "enrp") for _, d in core.pop_sends()
            if d[0] == EnrpType.HANDLE_TABLE_REQUEST]
    assert reqs and reqs[0].own_children_only
    core.receive(key, encode_message(HandleTableResponse(
        HOSTILE, A, [(b"P", [pe(5, B), pe(777, HOSTILE)])])), net.now)
    assert (b"P", 5, B) in net.table(A)
    assert (b"P", 777, HOSTILE) in net.table(A)
    events = core.pop_events()
    assert any(isinstance(ev, E.UpdateRefused) and ev.identifier == 5 for ev in events)
    assert any(isinstance(ev, E.AuditCompleted) for ev in events)
    net.hs(A).check()


def test_unbound_key_cannot_send_updates_and_list_request_works(hsmod):
    net, core, key = hostile_setup(hsmod)
    core.receive("anon", encode_message(HandleUpdate(0x77, A, UpdateAction.ADD_PE, b"P",
                                                     pe(42, 0x77))), net.now)
    assert (b"P", 42, 0x77) not in net.table(A)
    assert [ev.kind for ev in core.pop_events() if isinstance(ev, E.PeerMisbehaved)] == ["unbound"]
    core.receive(key, encode_message(ListRequest(HOSTILE, A)), net.now)
    ((_, data),) = core.pop_sends()
    servers = {s.server_id for s in decode_message(data, "enrp").servers}
    assert servers == {A, B}


@pytest.mark.parametrize("seed", range(4))
def test_random_losses_converge_after_audit(hsmod, seed):
    """Random registrations, re-registrations and deregistrations at three
    registrars while 15 % of the Handle Updates are lost: once the losses stop,
    the audits make the handlespaces equal within two heartbeat cycles."""
    import random as _random
    rng = _random.Random(seed)
    net = Net(hsmod, peer_max_time_last_heard=5.0, peer_max_time_no_response=5.0)
    ids = (A, B, C)
    for rid in ids:
        net.add(rid)
    net.mesh(*ids)
    net.run_until(3.0)
    net.drop = lambda s, d, data: data[0] == EnrpType.HANDLE_UPDATE and rng.random() < 0.15
    live: dict[int, tuple[int, bytes]] = {}
    t = 3.0
    for step in range(400):
        rid = rng.choice(ids)
        ident = rng.randrange(1, 120) | (ids.index(rid) + 1) << 16
        handle = b"pool-%d" % (ident % 5)
        if ident in live and rng.random() < 0.5:
            net.deregister(live[ident][0], live.pop(ident)[1], ident)
        else:
            owner = live.get(ident, (rid,))[0]
            net.register(owner, handle if ident not in live else live[ident][1], ident)
            live[ident] = (owner, live.get(ident, (owner, handle))[1])
        if step % 20 == 0:
            t += 0.5
            net.run_until(t)
    net.flush()
    net.drop = lambda *a: False
    net.run_until(t + 2 * 1.125 + 0.5)
    net.assert_converged(*ids)
    assert any(net.of(r, E.AuditMismatch) for r in ids)     # losses happened and were repaired
    expected = {(h, i, o) for i, (o, h) in live.items()}
    assert net.table(A) == expected
    assert not any(net.of(r, E.TakeoverStarted) for r in ids)


# ---- review findings ------------------------------------------------------------------


def test_second_association_from_another_host_cannot_impersonate_a_live_peer(hsmod):
    """A host that opens an association and claims the ID of a peer that is
    connected from elsewhere must not become that peer: otherwise its
    Presence with a wrong checksum starts an audit whose request goes to it,
    and its empty final page sweeps every PE of the real peer."""
    net = Net(hsmod)
    for rid in (A, B):
        net.add(rid)
    core = net.nodes[A]
    # the driver tells the core where each association comes from
    core.peer_connected(("assoc", B), net.now, addresses=("10.0.0.16",))
    net.nodes[B].peer_connected(("assoc", A), net.now, addresses=("10.0.0.48",))
    net.connected.add(frozenset((A, B)))
    net.run_until(5.0)
    net.register_range(B, b"P", range(1, 11))
    net.run_until(6.0)
    assert len(net.table(A)) == 10
    core.peer_connected("evil", net.now, addresses=("10.6.6.6",))
    core.receive("evil", encode_message(Presence(B, A, 0x1234, None)), net.now)
    core.receive("evil", encode_message(HandleTableResponse(B, A, [], False)), net.now)
    core.receive("evil", encode_message(HandleUpdate(B, A, UpdateAction.DEL_PE, b"P", pe(3, B))),
                 net.now)
    assert len(net.table(A)) == 10
    assert core.peer_keys(B) == (("assoc", B),)
    kinds = [ev.kind for ev in core.pop_events() if isinstance(ev, E.PeerMisbehaved)]
    assert "impersonation" in kinds
    # a second association from the peer's own address is still fine
    core.peer_connected("second", net.now, addresses=("10.0.0.16",))
    core.receive("second", encode_message(Presence(B, A, net.hs(B).checksum(B), None)), net.now)
    assert set(core.peer_keys(B)) == {("assoc", B), "second"}


def test_forged_multicast_presence_flood_is_bounded(hsmod):
    """Multicast Presences with random sender IDs: the peer table, the
    connect requests and the connect-request throttle stay bounded, and
    nothing is left behind once the forged peers time out."""
    import random as _random
    net = Net(hsmod)
    core = net.add(A)
    net.run_until(2.0)
    rng = _random.Random(5)
    requested = 0
    for i in range(3000):
        pid = rng.randrange(1, 1 << 32)
        info = ServerInformation(pid, SctpTransport(9901, [f"10.9.{i // 250}.{i % 250}"], 0))
        core.presence_datagram(encode_message(Presence(pid, 0, 0xFFFF, info)),
                               ("10.9.9.9", 9901), net.now)
        requested += sum(isinstance(ev, E.PeerConnectRequested) for ev in core.pop_events())
    assert len(core.peers()) <= E.MAX_PEERS
    assert requested <= E.MAX_PEERS
    net.run_until(net.now + 20.0)
    assert core.peers() == {}
    assert len(core._connect_requested) == 0


def test_unsolicited_list_response_requests_no_connections(hsmod):
    net, core, key = hostile_setup(hsmod)
    core.pop_events()
    servers = [ServerInformation(0x1000 + i, SctpTransport(9901, [f"10.8.0.{i % 250}"], 0))
               for i in range(300)]
    from rserpool.wire import ListResponse
    core.receive(key, encode_message(ListResponse(HOSTILE, A, [])), net.now)  # the answer
    core.receive(key, encode_message(ListResponse(HOSTILE, A, servers)), net.now)
    events = core.pop_events()
    assert not [ev for ev in events if isinstance(ev, E.PeerConnectRequested)]
    assert [ev.kind for ev in events if isinstance(ev, E.PeerMisbehaved)] == ["unsolicited"]


def _hostile_mentor(hsmod):
    net = Net(hsmod)
    core = net.add(A)
    core.peer_connected("h", net.now)
    info = ServerInformation(HOSTILE, SctpTransport(9901, ["10.0.0.66"], 0))
    core.receive("h", encode_message(Presence(HOSTILE, A, 0xFFFF, info)), net.now)
    assert core.mentor == HOSTILE and core.syncing() == (HOSTILE,)
    return net, core


@pytest.mark.parametrize("page", ["same", "empty"])
def test_handle_table_download_without_progress_is_abandoned(hsmod, page):
    """A mentor answering every request with M=1 and the same page (or an
    empty one) would keep the download, and the ban on audits while the
    mentor download runs, going forever."""
    net, core = _hostile_mentor(hsmod)
    entries = [(b"P", [pe(1, HOSTILE)])] if page == "same" else []
    for i in range(10):
        core.pop_sends()
        core.receive("h", encode_message(HandleTableResponse(HOSTILE, A, entries, True)),
                     net.now + i * 0.01)
    assert core.syncing() == ()
    assert core.mentor_done
    abandoned = [ev for ev in core.pop_events() if isinstance(ev, E.SyncAbandoned)]
    assert [ev.reason for ev in abandoned] == ["no progress"]


def test_pe_without_asap_transport_is_refused(hsmod):
    """Nobody could send the H-bit keep-alive to such a PE after a takeover
    (and the driver tripped over it): refuse it like RSPLIB's decoder does."""
    net, core, key = hostile_setup(hsmod)
    bare = pe(77, HOSTILE).replace(asap_transport=None)
    core.receive(key, encode_message(HandleUpdate(HOSTILE, A, UpdateAction.ADD_PE, b"P", bare)),
                 net.now)
    assert (b"P", 77) not in net.hs(A)
    assert [ev.reason for ev in core.pop_events() if isinstance(ev, E.UpdateRefused)] == \
        ["no ASAP transport"]


def test_lost_peer_advertising_the_wildcard_is_reconnected_at_its_association_address(hsmod):
    """A peer bound to 0.0.0.0 advertises 0.0.0.0: the reconnect after a lost
    association (and the List Response entry for it) use the address its
    association came from instead."""
    net = Net(hsmod)
    for rid in (A, B, C):
        net.add(rid)
    net.nodes[B].set_local_endpoint(["0.0.0.0"], 9901)
    core = net.nodes[A]
    core.peer_connected(("assoc", B), net.now, addresses=("10.0.0.16",))
    net.nodes[B].peer_connected(("assoc", A), net.now, addresses=("10.0.0.48",))
    net.connected.add(frozenset((A, B)))
    net.run_until(3.0)
    assert core.peers() == {B: PeerState.ALIVE}
    core.peer_connected(("assoc", C), net.now)
    core.receive(("assoc", C), encode_message(ListRequest(C, A)), net.now)
    core.receive(("assoc", C), encode_message(Presence(C, A, 0xFFFF, None)), net.now)
    core.receive(("assoc", C), encode_message(ListRequest(C, A)), net.now)
    lists = [decode_message(d, "enrp") for k, d in core.pop_sends()
             if d[0] == EnrpType.LIST_RESPONSE]
    listed = {s.server_id: tuple(s.transport.addresses) for s in lists[-1].servers}
    assert listed[B] == ("10.0.0.16",)
    core.pop_events()
    core.peer_disconnected(("assoc", B), net.now)
    (req,) = [ev for ev in core.pop_events() if isinstance(ev, E.PeerConnectRequested)]
    assert req.peer_id == B and req.addresses == ("10.0.0.16",) and req.port == 9901


def test_stuck_association_is_replaced_when_multicast_presences_get_through(hsmod):
    """Ours: after a partition shorter than max-time-last-heard, TCP may hold
    the association in retransmission back-off; a peer heard by multicast
    but silent on its associations for a whole heartbeat gets a new one
    (no takeover: the peer is alive)."""
    net = Net(hsmod, peer_max_time_last_heard=60.0)
    a = net.add(A)
    net.add(B)
    net.mesh(A, B)
    net.run_until(3.0)
    assert a.peers()[B] is PeerState.ALIVE and a.peer_keys(B)
    a.pop_events()
    a.pop_closes()
    # B's multicast Presences arrive, its association stays silent
    b = net.nodes[B]
    presence = encode_message(Presence(B, 0, b.handlespace.checksum(B), b._server_info))
    a.presence_datagram(presence, ("10.0.0.16", 9901), 4.0)
    assert a.peer_keys(B) and not a.pop_closes()      # one multicast proves nothing
    a.presence_datagram(presence, ("10.0.0.16", 9901), 5.0)
    closes = a.pop_closes()
    assert [key for key, _ in closes] == [("assoc", B)]
    assert a.peer_keys(B) == () and a.peers()[B] is PeerState.ALIVE
    events = a.pop_events()
    assert E.PeerAssociationsStale(B, 1) in events
    assert any(type(ev) is E.PeerConnectRequested and ev.peer_id == B for ev in events)
    # closing it later (the driver's abort) is no LINK_LOST: still alive
    a.peer_disconnected(("assoc", B), 5.0)
    assert a.peers()[B] is PeerState.ALIVE


def test_healthy_association_is_kept_while_multicast_also_arrives(hsmod):
    net = Net(hsmod, presence_multicast=True)
    a = net.add(A)
    net.add(B)
    net.mesh(A, B)
    net.run_until(10.0)   # B's Presences come by multicast and over the association
    assert a._peers[B].multicast_heard is not None and a._peers[B].multicast_heard > 5.0
    assert a.peer_keys(B) and a.counters["stale_associations"] == 0


def test_handle_update_is_encoded_once_and_addressed_to_each_peer(hsmod):
    """The copies of one Handle Update differ only in the receiver ID and
    are byte for byte what encoding it for that peer gives."""
    net = Net.meshed(hsmod, (A, B, C, D))
    a = net.nodes[A]
    a.pop_sends()
    net.register(A, b"P", 7)
    sends = a.pop_sends()
    assert sorted(key[1] for key, _ in sends) == [B, C, D]
    pe = a._pool_element(a.handlespace.get(b"P", 7))
    for (_, dst), data in sends:
        assert data == encode_message(HandleUpdate(A, dst, UpdateAction.ADD_PE, b"P", pe))
