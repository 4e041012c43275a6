"""A Modbus RTU slave that answers FC03 for one address only, after a fixed delay: a meter (or adapter) slower than
the scan's latency margin. Prints READY once it listens."""
import argparse
import struct
import sys
import time

import serial


def crc16(data):
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return struct.pack("<H", crc)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", required=True)
    ap.add_argument("--address", type=int, required=True)
    ap.add_argument("--delay-ms", type=float, required=True)
    args = ap.parse_args()
    line = serial.Serial(args.port, 9600, timeout=0.005)
    print("READY", flush=True)
    buf = b""
    while True:
        buf += line.read(64)
        while len(buf) >= 8:
            frame, buf = buf[:8], buf[8:]
            if crc16(frame[:6]) != frame[6:] or frame[1] != 3:
                buf = b""
                break
            if frame[0] != args.address:
                continue
            time.sleep(args.delay_ms / 1000)
            body = bytes([frame[0], 3, 4, 0x43, 0x66, 0x80, 0x00])
            line.write(body + crc16(body))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
