"""The OPC-UA driver's part of the command line: its ``plantwatch probe`` options and the
``plantwatch opcua-cert`` command (a self-signed client certificate for the gateway)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

from drivers.base import Command

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2

#: probe option -> device key of docs/DRIVERS.md
_SECURITY_OPTIONS = ("security_policy", "security_mode", "cert_file", "key_file", "username", "password_file",
                     "allow_insecure_login")


def probe_arguments(group: Any) -> None:
    group.add_argument("--depth", type=int, default=3, help="OPC-UA browse depth (default 3)")
    group.add_argument("--security-policy", help="OPC-UA: None, Basic256Sha256, Aes128Sha256RsaOaep, Aes256Sha256RsaPss")
    group.add_argument("--security-mode", help="OPC-UA: Sign or SignAndEncrypt")
    group.add_argument("--cert-file", help="OPC-UA client certificate (plantwatch opcua-cert makes one)")
    group.add_argument("--key-file", help="OPC-UA client private key")
    group.add_argument("--trust", action="append", help="OPC-UA server certificate to trust (repeatable)")
    group.add_argument("--username")
    group.add_argument("--password-file")
    group.add_argument("--allow-insecure-login", action="store_true",
                       help="OPC-UA: allow --username or --trust with security policy None (password in clear)")


async def probe(url: str, options: Mapping[str, Any]) -> list[str]:
    from drivers.opcua.probe import probe as browse

    security = {k: options[k] for k in _SECURITY_OPTIONS if options.get(k)}
    if options.get("trust"):
        security["trust"] = options["trust"]
    kwargs: dict[str, Any] = {"depth": options["depth"]} if options.get("depth") is not None else {}
    if options.get("timeout"):
        kwargs["timeout"] = options["timeout"]
    return await browse(url, **kwargs, **security)


def cert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="directory for the certificate (DER) and key (PEM, mode 0600)")
    parser.add_argument("--cn", default="plantwatch", help="common name (default plantwatch)")
    parser.add_argument("--uri", help="application URI (default urn:HOSTNAME:plantwatch)")
    parser.add_argument("--days", type=int, default=3650)
    parser.add_argument("--force", action="store_true",
                        help="replace an existing certificate and key (atomically; the old pair stops working)")


def cert_command(args: argparse.Namespace) -> int:
    from drivers.opcua.certs import make_self_signed

    if args.days < 1:
        print(f"opcua-cert: --days must be >= 1, not {args.days}", file=sys.stderr)
        return EXIT_USAGE
    try:
        cert, key = make_self_signed(args.out, args.cn, args.uri, args.days, replace=args.force)
    except OSError as exc:
        print(f"opcua-cert: {exc.filename or args.out}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAIL
    print(f"certificate {cert}")
    print(f"key         {key} (keep it readable by the plantwatch user only)")
    print("give the certificate to the OPC-UA server's administrator to trust; in the config:")
    print(f'  cert_file = "{cert}"\n  key_file = "{key}"')
    return EXIT_OK


COMMANDS = (
    Command("opcua-cert", "make a self-signed OPC-UA client certificate and key", cert_arguments, cert_command),
)
