"""A KPM33B played by pymodbus: an independent Modbus RTU slave for meterext's master.

Serves the documented register map with fixed, known values (float32 big-endian, high word first), exception 02
for unmapped addresses (sparse blocks), and relay coil 1. Values come from a JSON file written by the test:
{"address": 1, "serial": "33B0000126001", "floats": {"0x0030": 231.5, ...}, "words": {"0x001E": 56610}, "relay": 1,
 "raw": {"0x0032": "0x7F800000", ...}}
"raw" gives a float register's two words as one 32-bit pattern (NaN payloads, ±inf, subnormals, anything a float
cannot carry through JSON); it is applied after "floats". With --watch the peer re-reads the spec file whenever it
changes and serves the new values (a test walks through value sets without restarting the peer).
Prints "READY" once it serves.
"""
import argparse
import asyncio
import json
import struct
import sys

from pymodbus.datastore import ModbusServerContext, ModbusSlaveContext, ModbusSparseDataBlock
from pymodbus.framer import FramerType
from pymodbus.server import StartAsyncSerialServer

MAPPED = [(0x0000, 0x0002), (0x000C, 0x000F), (0x0012, 0x0021), (0x0023, 0x0026),
          (0x0030, 0x0063), (0x0068, 0x009B), (0x009C, 0x019F), (0x0200, 0x0205)]


def float_words(value):
    hi, lo = struct.unpack(">HH", struct.pack(">f", value))
    return hi, lo


def build_registers(spec):
    regs = {}
    for first, last in MAPPED:
        for a in range(first, last + 1):
            regs[a] = 0
    serial = spec.get("serial", "33B0000000000").encode()[:14].ljust(14, b"\0")
    for i in range(7):
        regs[0x0012 + i] = serial[2 * i] << 8 | serial[2 * i + 1]
    regs[0x0001] = spec.get("address", 1)
    for key, value in spec.get("floats", {}).items():
        hi, lo = float_words(float(value))
        a = int(key, 16)
        regs[a], regs[a + 1] = hi, lo
    for key, value in spec.get("words", {}).items():
        regs[int(key, 16)] = int(value)
    for key, value in spec.get("raw", {}).items():
        bits = int(value, 16) if isinstance(value, str) else int(value)
        a = int(key, 16)
        regs[a], regs[a + 1] = bits >> 16 & 0xFFFF, bits & 0xFFFF
    return regs


async def watch_spec(path, apply):
    """Calls apply(spec) whenever the spec file changes; shared with multi_meter_peer."""
    import os
    last = os.stat(path).st_mtime_ns
    while True:
        await asyncio.sleep(0.1)
        try:
            mtime = os.stat(path).st_mtime_ns
            if mtime == last:
                continue
            with open(path) as f:
                spec = json.load(f)
        except (OSError, ValueError):
            continue  # half-written: try again next time
        last = mtime
        apply(spec)


async def watch(path, hr):
    """Reloads the register values whenever the spec file changes (--watch)."""
    def apply(spec):
        for a, v in build_registers(spec).items():
            hr.setValues(a + 1, [v])
    await watch_spec(path, apply)


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", required=True)
    parser.add_argument("--spec", required=True)
    parser.add_argument("--watch", action="store_true", help="re-read the spec file when it changes")
    args = parser.parse_args()
    with open(args.spec) as f:
        spec = json.load(f)
    regs = build_registers(spec)
    # pymodbus 3.8 addresses data blocks at Modbus address + 1.
    hr = ModbusSparseDataBlock({a + 1: v for a, v in regs.items()})
    relay = int(spec.get("relay", 1))
    co = ModbusSparseDataBlock({2: relay, 3: relay, 4: relay})
    slave = ModbusSlaveContext(hr=hr, co=co)
    context = ModbusServerContext(slaves={spec.get("address", 1): slave}, single=False)
    if args.watch:
        asyncio.get_running_loop().create_task(watch(args.spec, hr))
    print("READY", flush=True)
    await StartAsyncSerialServer(context=context, framer=FramerType.RTU, port=args.port,
                                 baudrate=9600, parity="N", bytesize=8, stopbits=1,
                                 ignore_missing_slaves=True)  # a real meter stays silent for other addresses


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
