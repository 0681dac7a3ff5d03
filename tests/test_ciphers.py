"""The payload ciphers: the published known answers, padding, fixed and random IVs, encodings,
and errors that say what is wrong without showing the key."""

from __future__ import annotations

import base64
import re

import pytest
from cryptography.hazmat.primitives import padding

from agent.ciphers import CIPHERS, ENCODINGS, CipherError, PayloadCipher, blocks, read_hex

SM4_KEY = bytes.fromhex("0123456789abcdeffedcba9876543210")
AES_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
NIST_IV = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
NIST_PLAIN = bytes.fromhex(
    "6bc1bee22e409f96e93d7e117393172a" "ae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52ef" "f69f2445df4f9b17ad2b417be66c3710"
)
KEY = bytes(range(16))
IV = bytes(range(16, 32))
ENCRYPTED = [c for c in CIPHERS if c != "none"]


def pkcs7(data: bytes) -> bytes:
    padder = padding.PKCS7(128).padder()
    return padder.update(data) + padder.finalize()


# --- known answers ------------------------------------------------------------------------------


def test_sm4_known_answer_of_gbt_32907():
    # GB/T 32907-2016 appendix A, example 1: key = plaintext, one block, no padding
    assert blocks("sm4-ecb", SM4_KEY, SM4_KEY).hex() == "681edf34d206965e86b3e94f536e4246"
    assert blocks("sm4-ecb", SM4_KEY, bytes.fromhex("681edf34d206965e86b3e94f536e4246"), decrypt=True) == SM4_KEY
    # and padded: the same first block, then a whole block of padding
    text = PayloadCipher("sm4-ecb", SM4_KEY, encoding="hex").encrypt(SM4_KEY)
    assert len(text) == 64 and text.startswith("681edf34d206965e86b3e94f536e4246")
    assert PayloadCipher("sm4-ecb", SM4_KEY, encoding="hex").decrypt(text) == SM4_KEY


def test_aes_128_known_answers_of_nist_sp_800_38a():
    # F.1.1 ECB-AES128.Encrypt and F.2.1 CBC-AES128.Encrypt
    assert blocks("aes-128-ecb", AES_KEY, NIST_PLAIN).hex() == (
        "3ad77bb40d7a3660a89ecaf32466ef97" "f5d3d58503b9699de785895a96fdbaaf"
        "43b1cd7f598ece23881b00e3ed030688" "7b0c785e27e8ad3f8223207104725dd4"
    )
    assert blocks("aes-128-cbc", AES_KEY, NIST_PLAIN, NIST_IV).hex() == (
        "7649abac8119b246cee98e9b12e9197d" "5086cb9b507219ee95db113a917678b2"
        "73bed6b8e3c1743b7116e69e22229516" "3ff1caa1681fac09120eca307586e1a7"
    )
    first = NIST_PLAIN[:16]
    fixed = PayloadCipher("aes-128-cbc", AES_KEY, NIST_IV, "hex")
    assert fixed.encrypt(first).startswith("7649abac8119b246cee98e9b12e9197d")
    assert PayloadCipher("aes-128-ecb", AES_KEY, encoding="hex").encrypt(first).startswith(
        "3ad77bb40d7a3660a89ecaf32466ef97")
    assert fixed.decrypt(fixed.encrypt(first)) == first


# --- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize(("name", "iv"), [(n, None) for n in ENCRYPTED] + [(n, IV) for n in ENCRYPTED if n.endswith("-cbc")])
def test_every_cipher_and_encoding_round_trips(name, iv, encoding):
    cipher = PayloadCipher(name, KEY, iv, encoding)
    for plain in (b"", b"x", bytes(16), '{"qybm":"640100000001","bjms":"高高报警"}'.encode()):
        text = cipher.encrypt(plain)
        assert cipher.decrypt(text) == plain
        assert cipher.decrypt(text.encode()) == plain  # as the bytes of a message
        if encoding == "HEX":
            assert re.fullmatch("[0-9A-F]+", text)
        elif encoding == "hex":
            assert re.fullmatch("[0-9a-f]+", text)
        else:
            base64.b64decode(text, validate=True)


def test_a_fixed_iv_with_upper_case_hex_is_deterministic():
    cipher = PayloadCipher("sm4-cbc", KEY, IV, "HEX")
    plain = b'{"appid":"x","value":"1.000"}'
    text = cipher.encrypt(plain)
    assert text == cipher.encrypt(plain)
    assert text == blocks("sm4-cbc", KEY, pkcs7(plain), IV).hex().upper()  # no IV in front of it


@pytest.mark.parametrize("name", ["sm4-cbc", "aes-128-cbc"])
def test_a_random_iv_differs_each_time_and_travels_in_front(name):
    cipher = PayloadCipher(name, KEY)
    plain = b"the same message"
    first, second = cipher.encrypt(plain), cipher.encrypt(plain)
    assert first != second
    blob = base64.b64decode(first)
    assert len(blob) == 16 + 32
    assert blob[16:] == blocks(name, KEY, pkcs7(plain), blob[:16])
    assert cipher.decrypt(first) == cipher.decrypt(second) == plain


def test_ecb_is_the_same_for_the_same_block():
    cipher = PayloadCipher("aes-128-ecb", KEY, encoding="hex")
    text = cipher.encrypt(bytes(32))
    assert text[:32] == text[32:64]


def test_cipher_none_passes_the_text_through():
    cipher = PayloadCipher()
    assert cipher.encrypt('{"a":"高"}'.encode()) == '{"a":"高"}'
    assert cipher.decrypt('{"a":"高"}') == '{"a":"高"}'.encode()


# --- what cannot be used ------------------------------------------------------------------------


def test_wrong_lengths_and_an_iv_for_ecb_are_refused_without_showing_them():
    with pytest.raises(CipherError, match="16-byte key") as info:
        PayloadCipher("sm4-cbc", b"\xab\xcd" * 4)
    assert "abcd" not in str(info.value).lower()
    with pytest.raises(CipherError, match="16-byte IV") as info:
        PayloadCipher("aes-128-cbc", KEY, b"\xab\xcd" * 12)
    assert "abcd" not in str(info.value).lower()
    with pytest.raises(CipherError, match="sm4-ecb uses no IV"):
        PayloadCipher("sm4-ecb", KEY, IV)
    with pytest.raises(CipherError, match="key: is required"):
        PayloadCipher("aes-128-ecb")
    with pytest.raises(CipherError, match='cipher = "none"'):
        PayloadCipher("none", KEY)
    with pytest.raises(CipherError, match="encoding: must be one of"):
        PayloadCipher("sm4-cbc", KEY, encoding="base32")
    shown = repr(PayloadCipher("sm4-cbc", KEY, IV))
    assert "key=" not in shown and "iv=" not in shown and str(KEY) not in shown


def test_decrypt_says_which_step_failed():
    b64 = PayloadCipher("sm4-cbc", KEY)
    with pytest.raises(CipherError, match="not base64"):
        b64.decrypt("not*base64")
    with pytest.raises(CipherError, match="not hexadecimal"):
        PayloadCipher("sm4-ecb", KEY, encoding="HEX").decrypt("XYZ0")
    with pytest.raises(CipherError, match="too short for an IV"):
        b64.decrypt(base64.b64encode(bytes(20)).decode())
    with pytest.raises(CipherError, match="not whole 16-byte blocks"):
        b64.decrypt(base64.b64encode(bytes(40)).decode())
    with pytest.raises(CipherError, match="not whole 16-byte blocks"):
        PayloadCipher("aes-128-cbc", KEY, IV, "hex").decrypt("")
    other = PayloadCipher("sm4-cbc", bytes(16))
    with pytest.raises(CipherError, match="bad PKCS#7 padding after sm4-cbc decryption: wrong key") as info:
        # a wrong key yields a valid padding 1 time in ~256: try a few messages
        for i in range(20):
            other.decrypt(b64.encrypt(b"message %d" % i))
    assert KEY.hex() not in str(info.value)


def test_key_files_are_hex_text(tmp_path):
    f = tmp_path / "k"
    f.write_text("0123 4567 89ab cdef\nFEDC BA98 7654 3210\n")
    assert read_hex(f) == SM4_KEY
    f.write_text("0123456789abcdeffedcba987654321")
    with pytest.raises(CipherError, match="two characters a byte, not 31") as info:
        read_hex(f)
    assert "0123" not in str(info.value)
    f.write_text("secretsecretsecretsecretsecret!!")
    with pytest.raises(CipherError, match="hexadecimal") as info:
        read_hex(f)
    assert "secret" not in str(info.value)
    with pytest.raises(OSError):
        read_hex(tmp_path / "missing")
