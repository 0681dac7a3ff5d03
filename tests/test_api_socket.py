"""The operator socket's life on its own: born 0660, a stale socket replaced, a live one (or a
file that is no socket) never taken over; tokens compared whole."""

from __future__ import annotations

import asyncio
import os
import socket
import stat

import pytest

from agent.api import SocketApi, read_tokens, token_name


def api(path) -> SocketApi:
    return SocketApi(path, "", lambda p: (200, "application/json", b"{}"), lambda *a: (200, {}))


def test_the_socket_is_0660_and_a_stale_one_is_replaced(tmp_path):
    path = tmp_path / "run" / "api.sock"
    path.parent.mkdir()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # left behind: nobody listens

    async def main():
        server = api(path)
        await server.start()
        mode = stat.S_IMODE(os.stat(path).st_mode)
        await server.close()
        return mode

    old = os.umask(0o022)
    try:
        assert asyncio.run(main()) == 0o660
    finally:
        os.umask(old)
    assert not path.exists()  # removed when the agent stops


def test_a_live_socket_or_another_file_is_never_taken_over(tmp_path):
    live = tmp_path / "live.sock"
    holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    holder.bind(str(live))
    holder.listen()
    plain = tmp_path / "plain.file"
    plain.write_text("not a socket")
    try:
        with pytest.raises(OSError, match="another process answers on it"):
            asyncio.run(api(live).start())
        with pytest.raises(OSError, match="exists and is not a socket"):
            asyncio.run(api(plain).start())
        assert live.exists() and plain.read_text() == "not a socket"
    finally:
        holder.close()


def test_tokens_are_named_and_compared_whole(tmp_path):
    f = tmp_path / "api.token"
    f.write_text("# comment\nscada 0123456789abcdef0123\n\nfedcba9876543210fedc\nweak short\n")
    tokens = read_tokens(f)
    assert tokens == {"0123456789abcdef0123": "scada", "fedcba9876543210fedc": "api", "short": "weak"}
    assert token_name("0123456789abcdef0123", tokens) == "scada"
    assert token_name("fedcba9876543210fedc", tokens) == "api"
    assert token_name("0123456789abcdef012", tokens) is None  # a prefix is not the token
    assert token_name("short", tokens) is None  # under 16 characters never counts
