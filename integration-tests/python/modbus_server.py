"""A Modbus device for the connector tests: pymodbus's server with one
device (unit 1) whose coils, discrete inputs, holding and input registers
are known, over TCP (`tcp PORT`) or RTU on a serial line (`rtu TTY`).
Addresses 0..99 hold data; reading beyond is a Modbus exception 2; other
units do not answer. Prints `ready` once serving."""

import asyncio
import sys

from pymodbus import FramerType
from pymodbus.datastore import (
    ModbusSequentialDataBlock,
    ModbusServerContext,
    ModbusSlaveContext,
)
from pymodbus.server import ModbusSerialServer, ModbusTcpServer


def context():
    # The server reads address a at a block's a + 1: blocks starting at 1
    # make request address a the value at index a.
    unit = ModbusSlaveContext(
        co=ModbusSequentialDataBlock(1, [i % 2 == 1 for i in range(100)]),
        di=ModbusSequentialDataBlock(1, [i % 3 == 0 for i in range(100)]),
        hr=ModbusSequentialDataBlock(1, [i * 10 for i in range(100)]),
        ir=ModbusSequentialDataBlock(1, [1000 + i for i in range(100)]),
    )
    return ModbusServerContext(slaves={1: unit}, single=False)


async def main():
    kind, where = sys.argv[1], sys.argv[2]
    if kind == "tcp":
        server = ModbusTcpServer(
            context(), address=("127.0.0.1", int(where)), ignore_missing_slaves=True
        )
    else:
        server = ModbusSerialServer(
            context(),
            framer=FramerType.RTU,
            port=where,
            baudrate=9600,
            ignore_missing_slaves=True,
        )
    task = asyncio.create_task(server.serve_forever())
    await asyncio.sleep(0.3)
    print("ready", flush=True)
    await task


asyncio.run(main())
