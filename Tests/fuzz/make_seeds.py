#!/usr/bin/env python3
"""Writes the seed inputs of the binary-format fuzz targets into Tests/fuzz/corpus/ (committed; rerun after a
target's input layout changes). Seeds are valid exchanges, so the fuzzer starts past the CRC check."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def crc16(data: bytes) -> bytes:
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return struct.pack("<H", crc)


def frame(body: bytes) -> bytes:
    return body + crc16(body)


def write(target: str, name: str, data: bytes) -> None:
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# slave_codec: unit byte (simulator address = 1 + b % 247), then the line's bytes.
write("slave_codec", "read_basic", bytes([0]) + frame(bytes([1, 3, 0x00, 0x30, 0x00, 0x34])))
write("slave_codec", "read_relay", bytes([0]) + frame(bytes([1, 1, 0x00, 0x01, 0x00, 0x01])))
write("slave_codec", "relay_off", bytes([0]) + frame(bytes([1, 5, 0x00, 0x01, 0x00, 0x00])))
write("slave_codec", "write_params", bytes([0]) + frame(bytes([1, 0x10, 0x00, 0x26, 0x00, 0x01, 0x02, 0x00, 0x07])))
write("slave_codec", "garbage_then_read",
      bytes([0, 0x00, 0xFF, 0x7E]) + frame(bytes([1, 3, 0x00, 0x00, 0x00, 0x03])) + frame(bytes([1, 0x2B, 0, 0, 0, 0])))

# mbap_server: flags byte (1 unit known, 2 may write, 4 energy block read, 8 basic block read), then a Modbus TCP
# connection's bytes.
def mbap(transaction: int, unit: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", transaction, 0, len(pdu) + 1, unit) + pdu


write("mbap_server", "read_basic", bytes([0x0F]) + mbap(1, 1, bytes([3, 0x00, 0x30, 0x00, 0x34])))
write("mbap_server", "read_energy_then_serial", bytes([0x0F]) + mbap(2, 1, bytes([3, 0x00, 0x68, 0x00, 0x02]))
      + mbap(3, 1, bytes([3, 0x00, 0x12, 0x00, 0x07])))
write("mbap_server", "relay_off", bytes([0x03]) + mbap(4, 2, bytes([5, 0x00, 0x01, 0x00, 0x00])))
write("mbap_server", "write_params", bytes([0x03]) + mbap(5, 1, bytes([0x10, 0x00, 0x26, 0x00, 0x01, 0x02, 0x00, 0x07])))
write("mbap_server", "read_relay_unknown_unit", bytes([0x00]) + mbap(6, 9, bytes([1, 0x00, 0x01, 0x00, 0x03])))
write("mbap_server", "write_not_allowed", bytes([0x01]) + mbap(7, 1, bytes([5, 0x00, 0x01, 0xFF, 0x00])))


# master_transaction: unit, start(2), function selector (0 FC01, 1 FC03, 2 FC05, 3 FC16), quantity/value, baud
# selector, response timeout(2), inter-byte timeout(2), sent-at(4), then events: op (op % 6: 0/1 raw chunk,
# 2 well-formed reply, 3 exception/other frame, 4/5 timer; bit 6 = long time step), step, payload.
def master(unit, start, sel, qty_bytes, events):
    return bytes([unit - 1]) + struct.pack(">H", start) + bytes([sel]) + qty_bytes + bytes([3]) + \
        struct.pack(">HHI", 600, 500, 1000) + events


# FC03 of 2 registers; a well-formed reply in two pieces, payload 4 bytes, no damage, no truncation.
write("master_transaction", "fc03_ok", master(1, 0x30, 1, struct.pack(">H", 1),
      bytes([2, 10, 0x12, 0x34, 0x56, 0x78, 0, 1]) + struct.pack(">H", 3) + bytes([5])))
# FC01: raw leading garbage, then the reply.
write("master_transaction", "fc01_garbage", master(1, 1, 0, struct.pack(">H", 0),
      bytes([0, 5, 3, 0x00, 0xFF, 0x7E, 2, 5, 1, 0, 1, 0, 2, 1])))
# FC05: exception, then timer.
write("master_transaction", "fc05_exception", master(1, 1, 2, bytes([1]), bytes([3, 4, 0, 6, 4, 0xFF])))
# FC16 of 1 register: a raw, valid echo reply.
echo = frame(bytes([1, 0x10, 0x00, 0x26, 0x00, 0x01]))
write("master_transaction", "fc16_raw_echo", master(1, 0x26, 3, bytes([0]), bytes([0, 2, len(echo)]) + echo))
# Silence: only a timer past the deadline.
write("master_transaction", "silence", master(7, 0, 1, struct.pack(">H", 10), bytes([0x44, 0xFF, 0xFF])))

# meter_poller: a byte stream the simulated bus returns; seeds are the simulator's own replies (see the target).
# Left to the target's first run: it starts from the empty input, which answers nothing (the offline path).

# state_store: flags (bit0 no config, bit1 no state, bit2 leftover temp file), config length(2), config, state.
cfg = b'{"version":1,"apiToken":"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",' \
      b'"tokenRequired":false,"meterKey":"000102030405060708090a0b0c0d0e0f",' \
      b'"wifi":{"ssid":"Home","password":"secret-pass","mode":"sta"},' \
      b'"accessPoint":{"timeoutSeconds":600,"reopenAfterNoConnectionSeconds":900}}'
st = b'{"version":1,"startCount":3,"lastConnectedSSID":"Home"}'
write("state_store", "both_valid", bytes([0]) + struct.pack(">H", len(cfg)) + cfg + st)
write("state_store", "truncated_config", bytes([4]) + struct.pack(">H", 40) + cfg[:40] + st)
write("state_store", "no_files", bytes([3, 0, 0]))
write("state_store", "wrong_types", bytes([0]) + struct.pack(">H", 30) + b'{"version":"1","apiToken":5}  ' + b'[]')

# meter_poller: unit byte, then per request the poller sends a mode byte (0 = well-formed reply with payload from
# the input) and the payload, in the poller's order, then one time-step byte per cycle.
def regs(n, base):
    return bytes([0]) + b"".join(struct.pack(">f", base + i * 0.5) for i in range(n // 2))


first_cycle = regs(52, 230.0) + bytes([0, 1]) + regs(52, 1000.0) + regs(6, 1500.0)
params = bytes([0]) + struct.pack(">HHH", 0, 1, 3) + bytes([0]) + struct.pack(">f", 12.5) + \
    bytes([0]) + b"33B0012345678\x00\x00\x00" + struct.pack(">HHHHHHHH", 0, 0, 0, 0, 0x1911, 0x150A, 0x0405, 0) + \
    bytes([0]) + struct.pack(">HHHH", 0xDD22, 0, 0, 7)
history = regs(124, 10000.0) + regs(124, 20000.0) + regs(12, 30000.0)
write("meter_poller", "online_cycle", bytes([0]) + first_cycle + params + history + bytes([3]) +
      regs(52, 231.0) + bytes([0, 0]) + bytes([3]))
write("meter_poller", "silent_meter", bytes([0]) + bytes([3, 40] * 8))

# meter_values: flags byte (bits 0-1 alert minimum duration s, bit 2 prepaid mode); then per request a mode byte
# (0…239 = well-formed reply) and its payload in the poller's order: per float one selector byte (< 82: an extreme
# from the target's table — 0 = 3e38, 1 = -3e38, 2 = 1e20, 6 = inf, 7 = -inf, 8 = NaN, 11 = smallest subnormal —
# otherwise 4 raw big-endian bytes follow), per parameter word 2 raw bytes, per coil 1 byte; one time-step byte per cycle.
RAW = 255


def vfloats(values):
    out = b""
    for v in values:
        out += bytes([v[1]]) if isinstance(v, tuple) else bytes([RAW]) + struct.pack(">f", v)
    return bytes([0]) + out


def ext(i):
    return ("extreme", i)


basic_ok = [230.4, 229.8, 231.1, 5.2, 4.1, 6.3, 399.0, 398.5, 400.2, 1150.0, 900.0, 1400.0, 3450.0,
            120.0, -80.0, 10.0, 50.0, 1180.0, 950.0, 1450.0, 3580.0, 0.97, 0.95, 0.98, 0.96, 50.0]
energy_ok = [1000.0 + 10 * i for i in range(26)]
demand_ok = [1500.0, 800.0, 150.0]


def vparams(words_value=None):
    def w(*vals):
        return b"".join(struct.pack(">H", words_value if words_value is not None else v) for v in vals)
    return (bytes([0]) + w(0, 1, 3) + bytes([0]) + w(0x4148, 0) +
            bytes([0]) + w(*struct.unpack(">7H", b"33B0012345678\x00"), 0, 0, 0, 0, 0, 0, 0, 0, 0) +
            bytes([0]) + w(0x1A0B, 0x150A, 0x0405, 7))


def vhistory(values):
    return vfloats(values[:62]) + vfloats(values[62:124]) + vfloats(values[124:130])


hist_ok = [10000.0 + i for i in range(130)]


def vcycle1(basic, energy=energy_ok, demand=demand_ok, history=hist_ok, words=None):
    return (vfloats(basic) + bytes([0, 1]) + vfloats(energy) + vfloats(demand) + vparams(words) +
            vhistory(history) + bytes([3]))


def vcycle(basic):
    return vfloats(basic) + bytes([0, 1]) + bytes([3])


write("meter_values", "plausible", bytes([0]) + vcycle1(basic_ok) + vcycle(basic_ok))
write("meter_values", "voltage_3e38", bytes([1]) + vcycle1([ext(0)] + basic_ok[1:]) + vcycle(basic_ok) * 2)
write("meter_values", "current_minus_3e38", bytes([0]) + vcycle1(basic_ok[:3] + [ext(1)] + basic_ok[4:]))
write("meter_values", "power_1e20", bytes([0]) + vcycle1(basic_ok[:12] + [ext(2)] + basic_ok[13:]))
write("meter_values", "energy_inf", bytes([0]) + vcycle1(basic_ok, energy=energy_ok[:13] + [ext(6)] + energy_ok[14:]))
write("meter_values", "nan_everywhere", bytes([4]) + vcycle1([ext(8)] * 26, [ext(8)] * 26, [ext(8)] * 3, [ext(8)] * 130))
write("meter_values", "every_extreme",
      bytes([2]) + vcycle1([ext(i % 82) for i in range(26)], [ext((26 + i) % 82) for i in range(26)],
                           [ext(52 + i) for i in range(3)], [ext(i % 82) for i in range(130)]))
write("meter_values", "subnormals", bytes([0]) + vcycle1([ext(11)] * 26, [ext(11)] * 26))
write("meter_values", "words_ffff", bytes([4]) + vcycle1(basic_ok, words=0xFFFF))
write("meter_values", "words_0000", bytes([4]) + vcycle1(basic_ok, words=0x0000))
