"""Vectorised decoding of read responses into tag values.

Each poll concatenates the words of all register requests into one uint16 buffer and the bits of
all bit requests into one uint8 buffer. At plan time every tag gets its position in those buffers;
tags are grouped by (type, byte order) and each group is decoded with one fancy-index gather of
bytes and one ``view`` — no per-tag Python work on the hot path.

Byte orders name the four bytes of a 32-bit value as the device sends them, most significant
first in the value: ABCD big-endian (Modbus' own), CDAB word-swapped, BADC byte-swapped within
each word, DCBA fully little-endian. 64-bit values extend the same rule to four words (CDAB =
words in reverse order); 16-bit values use only the in-word part (BADC and DCBA swap the bytes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from drivers.modbus.address import BIT_AREAS, Point
from drivers.modbus.planner import Request

DTYPES = {"int16": ">i2", "uint16": ">u2", "int32": ">i4", "uint32": ">u4", "float32": ">f4",
          "int64": ">i8", "uint64": ">u8", "float64": ">f8"}


def byte_permutation(order: str, words: int) -> np.ndarray:
    """perm[j] = index of the received byte that is byte j (most significant first) of the value."""
    n = 2 * words
    j = np.arange(n)
    word, within = j // 2, j % 2
    if order in ("CDAB", "DCBA"):
        word = words - 1 - word
    if order in ("BADC", "DCBA"):
        within = 1 - within
    return (2 * word + within).astype(np.intp)


def decode_words(words: Sequence[int], type_: str, order: str) -> float | int:
    """One value from the register words as the device sent them: exact (an int for integer
    types, so 64-bit integers keep every digit)."""
    sent = b"".join(int(w).to_bytes(2, "big") for w in words)
    value = np.frombuffer(bytes(sent[i] for i in byte_permutation(order, len(words))), dtype=DTYPES[type_])[0]
    return float(value) if type_.startswith("float") else int(value)


class Decoder:
    """Decodes one poll of a device; built once per plan (rebuilt only when a request is split)."""

    def __init__(self, points: Sequence[Point], requests: Sequence[Request],
                 scale: np.ndarray, offset: np.ndarray):
        n = len(points)
        self.n = n
        self.scale = np.asarray(scale, dtype=np.float64)
        self.offset = np.asarray(offset, dtype=np.float64)
        self.reg_offsets: list[int] = []  # buffer offset of each request (register or bit buffer)
        reg_size = bit_size = 0
        pos = np.zeros(n, dtype=np.intp)
        self.request_of = np.zeros(n, dtype=np.intp)  # which request supplies each tag
        for r, req in enumerate(requests):
            base = bit_size if req.area in BIT_AREAS else reg_size
            self.reg_offsets.append(base)
            for m in req.members:
                pos[m] = base + points[m].address - req.start
                self.request_of[m] = r
            if req.area in BIT_AREAS:
                bit_size += req.count
            else:
                reg_size += req.count
        self.reg_size, self.bit_size = reg_size, bit_size
        self.pos = pos  # each tag's first position in the register or bit buffer
        # groups: (output positions, gather index, kind/dtype, extra)
        self.bit_tags = np.array([i for i, p in enumerate(points) if p.area in BIT_AREAS], dtype=np.intp)
        self.bit_pos = pos[self.bit_tags]
        regbits = [i for i, p in enumerate(points) if p.area not in BIT_AREAS and p.type == "bool"]
        self.regbit_tags = np.array(regbits, dtype=np.intp)
        self.regbit_pos = pos[self.regbit_tags]
        # bool on a whole register (no .bit) means "register != 0": a mask of all 16 bits
        self.regbit_mask = np.array([(1 << points[i].bit) if points[i].bit >= 0 else 0xFFFF for i in regbits],
                                    dtype=np.uint16)
        groups: dict[tuple[str, str], list[int]] = {}
        for i, p in enumerate(points):
            if p.area not in BIT_AREAS and p.type != "bool":
                groups.setdefault((p.type, p.order), []).append(i)
        self.groups: list[tuple[np.ndarray, np.ndarray, np.dtype]] = []
        for (type_, order), members in groups.items():
            idx = np.array(members, dtype=np.intp)
            words = np.dtype(DTYPES[type_]).itemsize // 2
            gather = 2 * pos[idx][:, None] + byte_permutation(order, words)[None, :]
            self.groups.append((idx, gather, np.dtype(DTYPES[type_])))

    def decode(self, regs: np.ndarray, bits: np.ndarray) -> np.ndarray:
        """Raw values (before scale/offset) for every point, in point order."""
        out = np.empty(self.n, dtype=np.float64)
        if self.groups:
            raw = regs.astype(">u2", copy=False).view(np.uint8)
            for idx, gather, dtype in self.groups:
                out[idx] = raw[gather].view(dtype).ravel()
        if self.bit_tags.size:
            out[self.bit_tags] = bits[self.bit_pos]
        if self.regbit_tags.size:
            out[self.regbit_tags] = (regs[self.regbit_pos] & self.regbit_mask) != 0
        return out

    def values(self, regs: np.ndarray, bits: np.ndarray) -> np.ndarray:
        """Engineering values: raw * scale + offset."""
        return self.decode(regs, bits) * self.scale + self.offset
