"""Several KPM33Bs on one RS485 line, played by pymodbus (issue 17): one RTU server answering several slave ids,
each with its own registers (kpm33b_peer's map). The spec file: {"meters": [<kpm33b_peer spec>, ...],
"silent": [2]}; the peer re-reads it when it changes, so a test can make a meter fall silent (a slave id that
no longer answers, as a meter that lost power) and come back. Prints "READY" once it serves.
"""
import argparse
import asyncio
import json
import os
import sys

from pymodbus.datastore import ModbusServerContext, ModbusSlaveContext, ModbusSparseDataBlock
from pymodbus.framer import FramerType
from pymodbus.server import StartAsyncSerialServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kpm33b_peer import build_registers, watch_spec  # noqa: E402


def slave_for(spec):
    regs = build_registers(spec)
    hr = ModbusSparseDataBlock({a + 1: v for a, v in regs.items()})
    relay = int(spec.get("relay", 1))
    co = ModbusSparseDataBlock({2: relay, 3: relay, 4: relay})
    return ModbusSlaveContext(hr=hr, co=co)


async def watch(path, context, slaves):
    def apply(spec):
        silent = set(spec.get("silent", []))
        for address, slave in slaves.items():
            present = address in context.slaves()
            if address in silent and present:
                del context[address]
            elif address not in silent and not present:
                context[address] = slave
    await watch_spec(path, apply)


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", required=True)
    parser.add_argument("--spec", required=True)
    args = parser.parse_args()
    with open(args.spec) as f:
        spec = json.load(f)
    slaves = {m["address"]: slave_for(m) for m in spec["meters"]}
    silent = set(spec.get("silent", []))
    context = ModbusServerContext(slaves={a: s for a, s in slaves.items() if a not in silent}, single=False)
    asyncio.get_running_loop().create_task(watch(args.spec, context, slaves))
    print("READY", flush=True)
    await StartAsyncSerialServer(context=context, framer=FramerType.RTU, port=args.port,
                                 baudrate=9600, parity="N", bytesize=8, stopbits=1,
                                 ignore_missing_slaves=True)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
