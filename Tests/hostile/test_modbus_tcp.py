"""Issue 17: hostile Modbus TCP masters against `meterext run --modbus-tcp` (the service as the board runs it, with the
built-in simulator): malformed MBAP headers, oversized lengths, unknown function codes, writes from outside the
allow-list, floods, too many connections, idle connections. The service must answer with an exception or close
the connection, never crash, and keep serving the others."""
import socket
import struct
import threading
import time
import urllib.request

from integration_conftest import free_port, start_service

LIMIT_PER_PEER = 16


def start(procs, bin_path, tmp_path, *extra):
    tcp = free_port()
    port = start_service(procs, bin_path, tmp_path, "--modbus-tcp", f"127.0.0.1:{tcp}",
                         "--modbus-tcp-allow", "192.0.2.0/24", *extra)
    # The first reading must be there before FC03 is served from it.
    deadline = time.time() + 15
    while time.time() < deadline:
        s = connect(tcp)
        s.sendall(adu(1, 1, [3, 0, 0x30, 0, 2]))
        tid, unit, pdu = read_adu(s)
        s.close()
        if pdu[0] == 3:
            return port, tcp
        time.sleep(0.3)
    raise AssertionError("FC03 never served")


def connect(tcp, timeout=5):
    s = socket.create_connection(("127.0.0.1", tcp), timeout=timeout)
    s.settimeout(timeout)
    return s


def adu(tid, unit, pdu, protocol=0, length=None):
    return struct.pack(">HHHB", tid, protocol, len(pdu) + 1 if length is None else length, unit) + bytes(pdu)


def recv_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def read_adu(s):
    tid, proto, length, unit = struct.unpack(">HHHB", recv_exact(s, 7))
    assert proto == 0
    return tid, unit, recv_exact(s, length - 1)


def closed(s):
    """The server closed the connection (EOF or reset) without sending anything more."""
    try:
        return s.recv(100) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def healthy(port, tcp):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
        assert r.status == 200
    s = connect(tcp)
    s.sendall(adu(77, 1, [3, 0, 0x30, 0, 2]))
    assert read_adu(s)[0] == 77
    s.close()


def test_malformed_headers_close_the_connection_and_exceptions_answer_the_rest(procs, bin_path, tmp_path):
    port, tcp = start(procs, bin_path, tmp_path)
    # Not Modbus: wrong protocol id, length 0, 1 (no PDU), 255 and 65535 (a PDU is at most 253 bytes).
    for bad in (adu(1, 1, [3, 0, 0x30, 0, 2], protocol=1), adu(1, 1, [], length=0), adu(1, 1, [], length=1),
                adu(1, 1, [3], length=255), adu(1, 1, [3], length=0xFFFF), b"GET / HTTP/1.1\r\n\r\n"):
        s = connect(tcp)
        s.sendall(bad)
        assert closed(s), bad
        s.close()
    s = connect(tcp)
    cases = [
        ([0x2B, 0x0E, 1, 0], [0xAB, 0x01]),            # unknown function (read device id)
        ([0x04, 0, 0, 0, 1], [0x84, 0x01]),            # input registers: not a KPM33B function
        ([0x08, 0, 0, 0x12, 0x34], [0x88, 0x01]),      # diagnostics
        ([3, 0, 0x30, 0, 0], [0x83, 0x03]),            # zero registers
        ([3, 0, 0x30, 0, 200], [0x83, 0x03]),          # too many registers
        ([3, 0, 0x30], [0x83, 0x03]),                  # short PDU
        ([3, 0xFF, 0xFF, 0, 2], [0x83, 0x02]),         # past the end of the address space
        ([0x10, 0, 0, 0, 2, 9, 0, 0], [0x90, 0x03]),   # FC16 byte count does not match
        ([5, 0, 1, 0xFF, 0], [0x85, 0x01]),            # write from outside the allow-list
        ([0x10, 0, 0x1E, 0, 1, 2, 0, 0], [0x90, 0x01]),
    ]
    for i, (pdu, want) in enumerate(cases):
        s.sendall(adu(i, 1, pdu))
        tid, unit, got = read_adu(s)
        assert (tid, unit, list(got)) == (i, 1, want), pdu
    # A unit id that is no meter on the bus: gateway path unavailable.
    s.sendall(adu(99, 42, [3, 0, 0x30, 0, 2]))
    assert list(read_adu(s)[2]) == [0x83, 0x0A]
    s.close()
    healthy(port, tcp)


def test_pipelined_requests_are_answered_in_order(procs, bin_path, tmp_path):
    port, tcp = start(procs, bin_path, tmp_path)
    s = connect(tcp)
    # Snapshot reads, forwarded reads and exceptions in one write: the replies keep the order.
    burst = b"".join(adu(i, 1, [3, 0, 0x12, 0, 7] if i % 3 == 0 else [3, 0, 0x30, 0, 4] if i % 3 == 1 else [0x2B])
                     for i in range(30))
    s.sendall(burst)
    for i in range(30):
        tid, unit, pdu = read_adu(s)
        assert tid == i
        assert pdu[0] == (3 if i % 3 != 2 else 0xAB)
    s.close()
    healthy(port, tcp)


def test_garbage_floods_and_split_frames(procs, bin_path, tmp_path):
    port, tcp = start(procs, bin_path, tmp_path)
    # A frame split into single bytes still works.
    s = connect(tcp)
    for b in adu(5, 1, [3, 0, 0x68, 0, 4]):
        s.sendall(bytes([b]))
        time.sleep(0.005)
    assert read_adu(s)[0] == 5
    s.close()
    # Random bytes and a megabyte that never forms a frame: the connection is closed, nothing else happens.
    import random
    rnd = random.Random(17)
    for _ in range(20):
        s = connect(tcp)
        try:
            s.sendall(bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 600))))
            s.shutdown(socket.SHUT_WR)
            s.recv(1000)
        except (ConnectionResetError, BrokenPipeError, socket.timeout):
            pass
        s.close()
    s = connect(tcp)
    # A header that announces the maximal length, then far more than that without ever being a valid next frame.
    try:
        s.sendall(adu(1, 1, [3, 0, 0x30, 0, 2]) + b"\x00\x01\x00\x00\x00\xfe\x01" + b"\x03" * (1 << 20))
    except (ConnectionResetError, BrokenPipeError):
        pass
    s.close()
    healthy(port, tcp)


def test_connection_limits_and_idle_timeout(procs, bin_path, tmp_path):
    port, tcp = start(procs, bin_path, tmp_path, "--modbus-tcp-idle-timeout", "1.5")
    held = [connect(tcp) for _ in range(LIMIT_PER_PEER)]
    for i, s in enumerate(held):
        s.sendall(adu(i, 1, [3, 0, 0x30, 0, 2]))
        assert read_adu(s)[0] == i
    extra = connect(tcp)
    assert closed(extra), "one connection more than the per-peer limit must be closed"
    extra.close()
    # Idle connections are closed, which frees the slots.
    time.sleep(2.5)
    for s in held:
        assert closed(s)
        s.close()
    healthy(port, tcp)
    # A half frame left hanging is an idle connection too.
    s = connect(tcp)
    s.sendall(adu(1, 1, [3, 0, 0x30, 0, 2])[:5])
    time.sleep(2.5)
    assert closed(s)
    s.close()


def test_eight_readers_as_fast_as_they_can_do_not_stop_the_service(procs, bin_path, tmp_path):
    port, tcp = start(procs, bin_path, tmp_path)
    stop = time.time() + 3
    counts = [0] * 8
    errors = []

    def reader(k):
        try:
            s = connect(tcp)
            while time.time() < stop:
                s.sendall(adu(k, 1, [3, 0, 0x30, 0, 52]))
                tid, unit, pdu = read_adu(s)
                assert pdu[0] == 3 and pdu[1] == 104
                counts[k] += 1
            s.close()
        except Exception as e:  # noqa: BLE001 — reported below
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert all(c > 0 for c in counts), counts
    healthy(port, tcp)


def test_a_master_that_never_reads_its_replies_is_bounded(procs, bin_path, tmp_path):
    """Each 12-byte request asks for a 113-byte reply: a server that kept reading while nobody reads its replies
    would queue ten times what the flood sends. It must stop reading (our send blocks) or close instead."""
    port, tcp = start(procs, bin_path, tmp_path)
    pid = service_pid(procs.procs[-1].pid)
    before = rss_kb(pid)
    s = connect(tcp)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(1)
    chunk = adu(1, 1, [3, 0, 0x30, 0, 52]) * 1024
    sent = 0
    deadline = time.time() + 8
    try:
        while time.time() < deadline:
            s.sendall(chunk)
            sent += len(chunk)
    except (socket.timeout, ConnectionResetError, BrokenPipeError):
        pass
    # Let the server work through what the kernel buffered for it (several MB): a server without back-pressure
    # reads it all and queues a reply for each request.
    time.sleep(4)
    after = rss_kb(pid)
    assert after - before < 12 * 1024, f"resident memory grew {after - before} kB after {sent} bytes of requests"
    s.close()
    healthy(port, tcp)


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith("VmRSS:")))


def service_pid(pid):
    """The meterext process under the board wrapper (bwrap → setpriv → meterext)."""
    for _ in range(5):
        with open(f"/proc/{pid}/comm") as f:
            if f.read().strip() == "meterext":
                return pid
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = f.read().split()
        if not kids:
            return pid
        pid = int(kids[-1])
    return pid
