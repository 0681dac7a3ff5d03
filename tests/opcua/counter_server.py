"""An asyncua server whose nodes count up: node ``ns=2;s=C.{i}`` holds k after the k-th update.

Run as its own process (the no-loss test and bench/opcua_bench.py) so that the server's CPU does
not compete with the client under test in one event loop. Every update carries its own source
timestamp, so a client that misses or reorders a notification shows it as a hole in the counts.

    python tests/opcua/counter_server.py --port 4840 --nodes 1000 --rate 10 --updates 100 --wait-items 1000

Prints ``READY <endpoint>`` once listening and ``DONE <updates>`` when the last update is written.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import signal
import sys

from asyncua import Server, ua

NS_URI = "urn:plantwatch:test:counters"


async def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=10.0, help="updates of every node per second")
    ap.add_argument("--updates", type=int, default=0, help="stop updating after this many (0: never)")
    ap.add_argument("--wait-items", type=int, default=0,
                    help="start updating once clients have this many monitored items (0: at once)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)

    server = Server()
    await server.init()
    endpoint = f"opc.tcp://127.0.0.1:{args.port}/counters"
    server.set_endpoint(endpoint)
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await server.register_namespace(NS_URI)
    assert idx == 2, idx
    folder = await server.nodes.objects.add_folder(idx, "Counters")
    nodeids = []
    for i in range(args.nodes):
        var = await folder.add_variable(ua.NodeId(f"C.{i}", idx), f"C.{i}", 0.0, varianttype=ua.VariantType.Double)
        nodeids.append(var.nodeid)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        print(f"READY {endpoint}", flush=True)
        # updates start only once the client watches every node, so the first count it sees is 1
        while _monitored_items(server) < args.wait_items and not stop.is_set():
            await asyncio.sleep(0.05)
        period = 1.0 / args.rate
        next_tick = loop.time()
        k = 0
        while not stop.is_set() and (args.updates == 0 or k < args.updates):
            next_tick += period
            k += 1
            now = dt.datetime.now(dt.UTC)
            value = ua.DataValue(ua.Variant(float(k), ua.VariantType.Double), SourceTimestamp=now, ServerTimestamp=now)
            for nid in nodeids:
                await server.write_attribute_value(nid, value)
            # write_attribute_value does not yield to the event loop; a server that falls behind
            # the rate must still let its publish loop answer between two updates
            delay = max(0.0, next_tick - loop.time())
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                pass
        print(f"DONE {k}", flush=True)
        await stop.wait()


def _monitored_items(server: Server) -> int:
    subs = server.iserver.subscription_service.subscriptions.values()
    return sum(len(sub.monitored_item_srv._monitored_items) for sub in subs)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
