"""Sits between two pty pairs and forwards Modbus RTU frames, injecting faults into the replies.

master side (meterext) <-> [pty pair 1] <-> proxy <-> [pty pair 2] <-> slave side (pymodbus or meterext simulate)

The fault for the next replies is read from a control file (one word per line, consumed in order; an empty file
means pass through): crc, silence, late, garbage, trailing, split, junkonly, other-unit.
"""
import argparse
import os
import select
import struct
import sys
import termios
import time
import tty


def crc16(data):
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return struct.pack("<H", crc)


def open_raw(path):
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    attrs = termios.tcgetattr(fd)
    attrs[6][termios.VMIN] = 0
    attrs[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    return fd


def read_frame(fd, first_timeout, gap=0.02):
    """Collects bytes until `gap` seconds of silence."""
    data = b""
    timeout = first_timeout
    while True:
        r, _, _ = select.select([fd], [], [], timeout)
        if not r:
            return data
        chunk = os.read(fd, 512)
        if not chunk:
            return data
        data += chunk
        timeout = gap


def next_fault(control):
    try:
        with open(control) as f:
            lines = [l.strip() for l in f if l.strip()]
    except FileNotFoundError:
        return None
    if not lines:
        return None
    if lines[0].startswith("always:"):
        return lines[0][len("always:"):]
    with open(control + ".tmp", "w") as f:
        f.write("\n".join(lines[1:]) + ("\n" if len(lines) > 1 else ""))
    os.replace(control + ".tmp", control)
    return lines[0]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--master-side", required=True)
    p.add_argument("--slave-side", required=True)
    p.add_argument("--control", required=True)
    p.add_argument("--log", default=None)
    a = p.parse_args()
    m = open_raw(a.master_side)
    s = open_raw(a.slave_side)
    log = open(a.log, "a") if a.log else None
    print("READY", flush=True)
    while True:
        request = read_frame(m, 1.0)
        if not request:
            continue
        os.write(s, request)
        reply = read_frame(s, 0.5)
        fault = next_fault(a.control)
        if log:
            log.write(f"{request.hex()} -> {reply.hex()} fault={fault}\n")
            log.flush()
        if not reply:
            continue
        if fault == "silence":
            continue
        if fault == "crc":
            reply = reply[:-1] + bytes([reply[-1] ^ 0x5A])
        elif fault == "garbage":
            reply = b"\x00\xff\x7e" + reply
        elif fault == "trailing":
            reply = reply + b"\x00\x13"
        elif fault == "junkonly":
            reply = b"\x55\xaa" * 8
        elif fault == "other-unit":
            body = bytes([(reply[0] + 1) & 0xFF]) + reply[1:-2]
            reply = body + crc16(body)
        elif fault == "exception":
            body = bytes([reply[0], reply[1] | 0x80, 0x02])
            reply = body + crc16(body)
        elif fault == "late":
            time.sleep(1.5)
        if fault == "split" and len(reply) > 4:
            os.write(m, reply[:3])
            time.sleep(0.01)
            os.write(m, reply[3:])
        else:
            os.write(m, reply)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
