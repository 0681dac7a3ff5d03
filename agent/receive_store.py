"""``plantwatch receive --store URL``: a storing receiver worker, and ``--report``: what the store says."""

from __future__ import annotations

import argparse
import logging
import socket
import sys

from agent.cli import EXIT_CONFIG, EXIT_FAIL, EXIT_OK


def _problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments of a storing receiver or a report, if anything."""
    if args.report and not args.store:
        return "--report reads the store: give --store URL"
    if args.listen or args.config or args.out:
        return "--store takes the json profile over MQTT: --listen, --config and --out do not go with it"
    if not args.report and not args.broker:
        return "--store: give --broker (or --report)"
    if args.group and not args.client_id and not args.report:
        return "--store --group: give each worker its own --client-id (the broker keeps its session under it)"
    if args.offline_after <= 0:
        return f"--offline-after must be > 0, not {args.offline_after:g}"
    if args.session_expiry < 1 or args.session_expiry > 2**32 - 1:
        return f"--session-expiry must be 1..4294967295 s, not {args.session_expiry}"
    if args.max_payload is not None and args.max_payload < 1:
        return f"--max-payload must be >= 1, not {args.max_payload}"
    return None


def run_store(args: argparse.Namespace) -> int:
    from agent.store import Store, StoreError, StoreUrlError

    wrong = _problem(args)
    if wrong:
        print(f"receive: {wrong}", file=sys.stderr)
        return EXIT_CONFIG
    client_id = args.client_id or f"plantwatch-receive-{socket.gethostname()}"
    try:
        store = Store.open(args.store, worker=client_id)
    except StoreUrlError as exc:
        print(f"receive: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.report:
        try:
            report = store.report(args.offline_after)
        except StoreError as exc:
            print(f"receive: store {store.safe_url}: {exc}", file=sys.stderr)
            return EXIT_FAIL
        finally:
            store.close()
        for line in report.lines():
            print(line, flush=True)
        return EXIT_FAIL if args.strict and (report.gaps or report.offline()) else EXIT_OK
    return _serve(args, store, client_id)


def _serve(args: argparse.Namespace, store, client_id: str) -> int:
    from agent.ingest import Worker, connect
    from agent.receive import _wait, broker_password
    from agent.receiver import MAX_PAYLOAD

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    password = broker_password(args)
    if password is False:
        return EXIT_CONFIG
    worker = Worker(store, emit=lambda line: print(line, flush=True), max_payload=args.max_payload or MAX_PAYLOAD)
    worker.start()
    client = None
    try:
        client = connect(worker, args.broker, client_id, args.plant, args.prefix, group=args.group,
                         session_expiry_s=args.session_expiry, ca_file=args.ca_file, cert_file=args.cert_file,
                         key_file=args.key_file, username=args.username, password=password)
        print(f"receiving from {args.broker} as {client_id} (plant {args.plant or 'any'}), storing in "
              f"{store.safe_url}; Ctrl-C to stop", flush=True)
        _wait(args, lambda: worker.stored["alarm"])
    except (OSError, ConnectionError, ValueError) as exc:
        print(f"receive: {exc}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        worker.close()  # the batch at hand is stored and acknowledged first
        if client is not None:
            client.disconnect()
            client.loop_stop()
        store.close()
    for line in worker.summary():
        print(line, flush=True)
    return EXIT_FAIL if args.strict and worker.refused else EXIT_OK
