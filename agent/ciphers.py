"""The payload ciphers a province issues: SM4 or AES-128, CBC or ECB, PKCS#7 padding, the IV
fixed or random per message, the ciphertext written as base64 or hex text.

A platform's spec names the algorithm, the mode, the key and IV (盐) it hands out and how the
bytes are written; each is a choice here rather than code per province. With CBC and no fixed
IV, every message gets a fresh random IV, sent in front of the ciphertext (``iv ‖ ciphertext``)
so that the platform can decrypt it. No error message of this module contains a key or an IV.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers import algorithms

# cryptography is imported where a payload is enciphered (below), not with this module: every
# config loads it, few encrypt, and the import costs ~7 MB of RSS

CIPHERS = ("none", "sm4-cbc", "sm4-ecb", "aes-128-cbc", "aes-128-ecb")
ENCODINGS = ("base64", "hex", "HEX")  # hex: lower case, HEX: upper case
KEY_BYTES = IV_BYTES = BLOCK_BYTES = 16


class CipherError(ValueError):
    """A cipher that cannot be set up, or a message that cannot be decrypted; the text says
    what is wrong and never holds the key."""


def _algorithm(name: str, key: bytes) -> algorithms.SM4 | algorithms.AES:
    from cryptography.hazmat.primitives.ciphers import algorithms

    return algorithms.SM4(key) if name.startswith("sm4") else algorithms.AES(key)


def is_cbc(name: str) -> bool:
    return name.endswith("-cbc")


def blocks(name: str, key: bytes | None, data: bytes, iv: bytes | None = None, *, decrypt: bool = False) -> bytes:
    """The block cipher ``name`` over whole blocks, without padding: the primitive the known
    answers of GB/T 32907 and NIST SP 800-38A are stated for."""
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    mode = modes.CBC(iv) if is_cbc(name) else modes.ECB()
    ctx = Cipher(_algorithm(name, key), mode)
    op = ctx.decryptor() if decrypt else ctx.encryptor()
    return op.update(data) + op.finalize()


def problems(name: str, key: bytes | None, iv: bytes | None) -> list[tuple[str, str]]:
    """What is wrong with this choice, as (the key's role, message): ``key`` or ``iv``."""
    if name not in CIPHERS:
        return [("cipher", f"must be one of {', '.join(CIPHERS)}, not {name!r}")]
    out = []
    if name == "none":
        if key is not None:
            out.append(("key", 'a key with cipher = "none": set the cipher the key is for'))
        if iv is not None:
            out.append(("iv", 'an IV with cipher = "none": set the cipher it is for'))
        return out
    if key is None:
        out.append(("key", f"is required with cipher = {name!r}"))
    elif len(key) != KEY_BYTES:
        out.append(("key", f"must hold a {KEY_BYTES}-byte key ({2 * KEY_BYTES} hex characters), not {len(key)} bytes"))
    if iv is not None and not is_cbc(name):
        out.append(("iv", f"{name} uses no IV: remove it, or choose the CBC mode the spec names"))
    elif iv is not None and len(iv) != IV_BYTES:
        out.append(("iv", f"must hold a {IV_BYTES}-byte IV ({2 * IV_BYTES} hex characters), not {len(iv)} bytes"))
    return out


@dataclass(frozen=True)
class PayloadCipher:
    """Bytes to the text a platform expects, and back.

    ``iv`` None with CBC: a random IV per message, prefixed to the ciphertext. With ``name``
    "none" the payload is the bytes themselves, as UTF-8 text, and ``encoding`` is not used."""

    name: str = "none"
    key: bytes | None = field(default=None, repr=False)
    iv: bytes | None = field(default=None, repr=False)
    encoding: str = "base64"

    def __post_init__(self) -> None:
        wrong = problems(self.name, self.key, self.iv)
        if self.encoding not in ENCODINGS:
            wrong.append(("encoding", f"must be one of {', '.join(ENCODINGS)}, not {self.encoding!r}"))
        if wrong:
            raise CipherError("; ".join(f"{role}: {message}" for role, message in wrong))

    @property
    def random_iv(self) -> bool:
        return is_cbc(self.name) and self.iv is None

    def encrypt(self, plain: bytes, iv: bytes | None = None) -> str:
        """The payload text of ``plain``. ``iv`` replaces the random IV (tests, known answers)."""
        if self.name == "none":
            return plain.decode("utf-8")
        from cryptography.hazmat.primitives import padding

        padder = padding.PKCS7(8 * BLOCK_BYTES).padder()
        data = padder.update(plain) + padder.finalize()
        if self.random_iv:
            iv = os.urandom(IV_BYTES) if iv is None else iv
            return self._text(iv + blocks(self.name, self.key, data, iv))
        return self._text(blocks(self.name, self.key, data, self.iv))

    def decrypt(self, text: str | bytes) -> bytes:
        """The plain bytes of a payload text; CipherError says which step failed."""
        if self.name == "none":
            return text.encode("utf-8") if isinstance(text, str) else text
        blob = self._bytes(text)
        iv = self.iv
        if self.random_iv:
            if len(blob) < IV_BYTES + BLOCK_BYTES:
                raise CipherError(f"{len(blob)} bytes: too short for an IV and one {BLOCK_BYTES}-byte block")
            iv, blob = blob[:IV_BYTES], blob[IV_BYTES:]
        if not blob or len(blob) % BLOCK_BYTES:
            raise CipherError(f"ciphertext of {len(blob)} bytes is not whole {BLOCK_BYTES}-byte blocks")
        data = blocks(self.name, self.key, blob, iv, decrypt=True)
        from cryptography.hazmat.primitives import padding

        unpadder = padding.PKCS7(8 * BLOCK_BYTES).unpadder()
        try:
            return unpadder.update(data) + unpadder.finalize()
        except ValueError:
            raise CipherError(f"bad PKCS#7 padding after {self.name} decryption: "
                              "wrong key or IV, or a damaged message") from None

    def _text(self, blob: bytes) -> str:
        if self.encoding == "base64":
            return base64.b64encode(blob).decode("ascii")
        return blob.hex().upper() if self.encoding == "HEX" else blob.hex()

    def _bytes(self, text: str | bytes) -> bytes:
        """The encoded bytes; hex is read in either case."""
        try:
            if isinstance(text, bytes):
                text = text.decode("ascii")
            text = text.strip()
            if self.encoding == "base64":
                return base64.b64decode(text, validate=True)
            return bytes.fromhex(text)
        except (UnicodeDecodeError, binascii.Error, ValueError):
            raise CipherError(f"not {'base64' if self.encoding == 'base64' else 'hexadecimal'} text") from None


def read_hex(path: str | os.PathLike[str]) -> bytes:
    """Bytes from a file of hexadecimal text (whitespace ignored), as key and IV files are
    issued. OSError when the file cannot be read; CipherError, without the content, when it is
    not hex."""
    with open(path, encoding="ascii", errors="replace") as f:
        text = "".join(f.read().split())
    if len(text) % 2:
        raise CipherError(f"must hold hexadecimal text, two characters a byte, not {len(text)} characters")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise CipherError("must hold hexadecimal text (0-9, a-f) only") from None
