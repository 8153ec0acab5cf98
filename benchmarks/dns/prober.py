"""The scale section's measuring side: change -> visible timed where the machine's load does not
move the timestamps, with the prober's own delay reported next to them.

A probe sends the change to redis on a connection of its own (the replies are read after the
change is seen, so the first DNS query leaves at once) and takes its start time right before
the send. It then asks CoreDNS over a UDP socket with SO_TIMESTAMPNS: every reply carries the
time the kernel received it, which does not depend on when the prober gets to read it. So:

  * upper bound: write sent -> kernel receipt of the first answer with the new data;
  * lower bound: write sent -> the sending of the last query answered with the old data (the
    change was not visible before that query was answered, and that query left then);
  * the prober's own delay: per reply, kernel receipt -> the prober reading it, and per pause
    between polls, how much longer than 1 ms it slept. Under load these grow; the upper bound
    then stays true, the lower bound falls behind, and the gap says how exact a sample is.

Linux only (SO_TIMESTAMPNS).
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field

import dns.message
import dns.rdatatype
import redis

LOOPBACK = "127.0.0.1"
AGENT_CHANNEL = "tfgateway:dns"
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
POLL_PAUSE_S = 0.001  # between two queries of one probe


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


@dataclass
class ProbeStats:
    """Probes of one stream (or pooled streams)."""

    upper_ms: list[float] = field(default_factory=list)
    lower_ms: list[float] = field(default_factory=list)
    published_ms: list[float] = field(default_factory=list)  # write sent -> redis published
    after_publish_ms: list[float] = field(default_factory=list)  # published -> visible (upper)
    read_delay_ms: list[float] = field(default_factory=list)  # kernel receipt -> read
    oversleep_ms: list[float] = field(default_factory=list)  # pause beyond POLL_PAUSE_S
    timeouts: int = 0

    def extend(self, other: ProbeStats) -> None:
        self.upper_ms += other.upper_ms
        self.lower_ms += other.lower_ms
        self.published_ms += other.published_ms
        self.after_publish_ms += other.after_publish_ms
        self.read_delay_ms += other.read_delay_ms
        self.oversleep_ms += other.oversleep_ms
        self.timeouts += other.timeouts


class RawAgentWriter:
    """The agent's transaction (MULTI, HSET, PUBLISH `ZONE FIELD` or `ZONE`, EXEC) sent on a
    connection of its own, its replies read only after the probe: send() returns the time
    (ns, CLOCK_REALTIME) right before the bytes left."""

    def __init__(self, rport: int, db: int, names: bool) -> None:
        self.pool = redis.ConnectionPool(host=LOOPBACK, port=rport, db=db)
        self.conn = self.pool.get_connection()
        self.names = names
        self.unread = 0

    def send(self, zone: str, owner: str, value: str) -> int:
        self.drain()
        packed = self.conn.pack_commands(  # type: ignore[no-untyped-call]
            [
                ("MULTI",),
                ("HSET", zone, owner, value),
                ("PUBLISH", AGENT_CHANNEL, f"{zone} {owner}" if self.names else zone),
                ("EXEC",),
            ]
        )
        t = time.time_ns()
        self.conn.send_packed_command(packed)  # type: ignore[no-untyped-call]
        self.unread = 4
        return t

    def drain(self) -> None:
        while self.unread:
            self.conn.read_response()
            self.unread -= 1

    def close(self) -> None:
        self.drain()
        self.pool.release(self.conn)
        self.pool.disconnect()


class ChannelTap:
    """A subscriber of the agent's channel whose messages carry the kernel's receipt time:
    when redis published a probe's message, i.e. ran its transaction and wrote to every
    subscriber (the plugin's among them). Splits a probe's time into redis's part and the
    rest (the plugin's subscriber, the plugin, the answer)."""

    def __init__(self, rport: int) -> None:
        self.sock = socket.create_connection((LOOPBACK, rport))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.sendall(
            b"*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(AGENT_CHANNEL), AGENT_CHANNEL.encode())
        )
        self.sock.settimeout(5)
        got = b""
        while b"subscribe" not in got:
            got += self.sock.recv(4096)

    def drain(self) -> None:
        """Forget what was published so far."""
        self.sock.setblocking(False)
        try:
            while self.sock.recv(65536):
                pass
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)

    def published(self, payload: str, timeout: float = 2.0) -> int:
        """Kernel receipt time (ns) of the message with payload, published since the last
        drain; 0 if it does not come within timeout."""
        needle = payload.encode()
        tail = b""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data, anc, _, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(16))
            except TimeoutError:
                break
            if not data:
                break
            rx = 0
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", cdata[:16])
                    rx = sec * 1_000_000_000 + nsec
            if needle + b"\r\n" in tail + data:
                return rx
            tail = data[-len(needle) - 2 :]
        return 0

    def close(self) -> None:
        self.sock.close()


class UdpProber:
    """Asks one CoreDNS for A records over UDP; replies carry the kernel's receipt time."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.connect((LOOPBACK, port))
        self.next_id = 1

    def ask(self, name: str, stats: ProbeStats, timeout: float = 0.5) -> tuple[int, int, set[str]]:
        """Query name; returns (send ns, kernel receipt ns or 0 on timeout, A addresses)."""
        q = dns.message.make_query(name, "A")
        self.next_id = self.next_id % 65535 + 1
        q.id = self.next_id
        wire = q.to_wire()
        sent = time.time_ns()
        self.sock.send(wire)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(16))
            except TimeoutError:
                break
            read = time.time_ns()
            rx = read
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", cdata[:16])
                    rx = sec * 1_000_000_000 + nsec
            try:
                msg = dns.message.from_wire(data)
            except dns.exception.DNSException:
                continue
            if msg.id != q.id:
                continue  # a late reply to an earlier query
            stats.read_delay_ms.append((read - rx) / 1e6)
            ips = {
                rd.to_text()
                for rrset in msg.answer
                if rrset.rdtype == dns.rdatatype.A
                for rd in rrset
            }
            return sent, rx, ips
        return sent, 0, set()

    def wait_visible(
        self, name: str, ip: str, written_ns: int, stats: ProbeStats, deadline_s: float = 5.0
    ) -> None:
        """Poll name until it answers ip; one sample of upper and lower bound into stats."""
        last_old = written_ns
        while True:
            sent, rx, ips = self.ask(name, stats)
            if rx and ip in ips:
                stats.upper_ms.append((rx - written_ns) / 1e6)
                stats.lower_ms.append((last_old - written_ns) / 1e6)
                return
            if rx:
                last_old = sent
            if (time.time_ns() - written_ns) / 1e9 > deadline_s:
                stats.timeouts += 1
                return
            t = time.perf_counter()
            time.sleep(POLL_PAUSE_S)
            stats.oversleep_ms.append(max(0.0, (time.perf_counter() - t - POLL_PAUSE_S) * 1000))

    def close(self) -> None:
        self.sock.close()
