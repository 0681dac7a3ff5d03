# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The CSV reader's chunk parser: a chunk of delimited lines (UTF-8 bytes) straight into a
rows x tags float64 array, no Python object per cell.

Each field goes to one column of the array, to the time array, or is skipped (``where`` per
field: >= 0 the column, TIME the time, SKIP). A number is [blanks][+-]digits[.digits][(e|E)
[+-]digits][blanks] (digits on at least one side of the point) or nan, inf, infinity in any
case; an empty or blank cell is NaN (the time's is not). Values are correctly rounded, as
Python's float() rounds them: at most 19 digits and a power of ten up to 1e22 in one exact
multiplication or division (one rounding of exact operands), else C's strtod on the checked
text. Lines end in \\n, \\r\\n or \\r, the last one may end without. Anything else (another
number of fields, a blank line, a quote, text that is not such a number, another count of
lines than expected) makes parse_chunk return -1: the caller parses the chunk the careful way.
"""

from libc.math cimport INFINITY, NAN
from libc.stdlib cimport strtod

include "_build.pxi"

SKIP = -1
DEF TIME = -2
TIME_FIELD = TIME

cdef double[23] POW10 = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                         1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22]
DEF LONGEST = 96  # characters of a number given to strtod; longer ones go the careful way
DEF DIGITS = 19  # the most digits that fit an unsigned 64-bit integer


cdef inline bint _blank(unsigned char c) noexcept nogil:
    return c == 32 or c == 9


cdef inline unsigned char _lower(unsigned char c) noexcept nogil:
    return c | 32 if 65 <= c <= 90 else c


cdef bint _word(const unsigned char *p, Py_ssize_t n, const char *word) noexcept nogil:
    cdef Py_ssize_t i = 0
    while i < n:
        if word[i] == 0 or _lower(p[i]) != <unsigned char>word[i]:
            return False
        i += 1
    return word[n] == 0


cdef inline void _digit(int d, bint fraction, unsigned long long *mantissa, int *digits, int *exponent,
                        bint *truncated) noexcept nogil:
    """One more digit of a number: up to DIGITS significant ones kept exactly, later ones drop
    (truncated: the number goes to strtod)."""
    if mantissa[0] == 0 and d == 0:  # a leading zero
        if fraction:
            exponent[0] -= 1
    elif digits[0] < DIGITS:
        mantissa[0] = mantissa[0] * 10 + d
        digits[0] += 1
        if fraction:
            exponent[0] -= 1
    else:
        truncated[0] = True
        if not fraction:
            exponent[0] += 1


cdef int _number(const unsigned char *p, const unsigned char *end, bint empty_ok, double *out) noexcept nogil:
    """The number in [p, end) into out; 0 when it is one, -1 when not."""
    cdef const unsigned char *start
    cdef bint negative = False, exp_negative = False
    cdef unsigned long long mantissa = 0
    cdef int digits = 0, exponent = 0, seen = 0, exp_digits = 0
    cdef bint truncated = False
    cdef long long exp_value = 0
    cdef double value
    cdef char buf[LONGEST + 1]
    cdef char *stop
    while p < end and _blank(p[0]):
        p += 1
    while end > p and _blank((end - 1)[0]):
        end -= 1
    if p == end:
        if empty_ok:
            out[0] = NAN
            return 0
        return -1
    start = p
    if p[0] == 43 or p[0] == 45:  # + -
        negative = p[0] == 45
        p += 1
    if p < end and _lower(p[0]) >= 97 and _lower(p[0]) <= 122:
        if _word(p, end - p, b"nan"):
            out[0] = -NAN if negative else NAN
        elif _word(p, end - p, b"inf") or _word(p, end - p, b"infinity"):
            out[0] = -INFINITY if negative else INFINITY
        else:
            return -1
        return 0
    while p < end and 48 <= p[0] <= 57:
        _digit(p[0] - 48, False, &mantissa, &digits, &exponent, &truncated)
        p += 1
        seen += 1
    if p < end and p[0] == 46:  # .
        p += 1
        while p < end and 48 <= p[0] <= 57:
            _digit(p[0] - 48, True, &mantissa, &digits, &exponent, &truncated)
            p += 1
            seen += 1
    if seen == 0:
        return -1
    if p < end and (p[0] == 101 or p[0] == 69):  # e E
        p += 1
        if p < end and (p[0] == 43 or p[0] == 45):
            exp_negative = p[0] == 45
            p += 1
        while p < end and 48 <= p[0] <= 57:
            if exp_value < 100000:
                exp_value = exp_value * 10 + (p[0] - 48)
            p += 1
            exp_digits += 1
        if exp_digits == 0:
            return -1
    if p != end:
        return -1
    exp_value = exponent + (-exp_value if exp_negative else exp_value)
    if not truncated and mantissa <= (1ULL << 53) and -22 <= exp_value <= 22:
        value = <double>mantissa
        value = value * POW10[exp_value] if exp_value >= 0 else value / POW10[-exp_value]
        out[0] = -value if negative else value
        return 0
    if end - start > LONGEST:
        return -1
    for i in range(end - start):
        buf[i] = <char>start[i]
    buf[end - start] = 0
    value = strtod(buf, &stop)
    if stop != buf + (end - start):
        return -1
    out[0] = value
    return 0


def parse_chunk(const unsigned char[::1] data, Py_ssize_t rows, const int[::1] where, unsigned char delimiter,
                double[:, ::1] values, double[::1] times):
    """Parse ``rows`` lines of ``data`` into values[:rows] and times[:rows]: the rows parsed,
    or -1 when the chunk is not plain (the arrays then hold garbage)."""
    cdef Py_ssize_t n = data.shape[0], got
    cdef double dummy = 0.0
    if values.shape[0] < rows or times.shape[0] < rows:
        raise ValueError("the output arrays are shorter than the rows")
    if n == 0 or rows == 0:
        return -1
    with nogil:
        got = _parse(&data[0], &data[0] + n, rows, &where[0], where.shape[0], delimiter,
                     &values[0, 0] if values.shape[1] else &dummy, values.shape[1], &times[0] if times.shape[0] else &dummy)
    return got


cdef Py_ssize_t _parse(const unsigned char *p, const unsigned char *end, Py_ssize_t rows, const int *where,
                       Py_ssize_t width, unsigned char delimiter, double *values, Py_ssize_t stride,
                       double *times) noexcept nogil:
    cdef Py_ssize_t row = 0, field
    cdef const unsigned char *cell
    cdef unsigned char c
    cdef int target
    while p < end:
        if row == rows:
            return -1
        field = 0
        while True:
            cell = p
            while p < end:
                c = p[0]
                if c == delimiter or c == 10 or c == 13 or c == 34:
                    break
                p += 1
            if p < end and p[0] == 34:  # a quote
                return -1
            if field >= width:
                return -1
            target = where[field]
            if target >= 0:
                if _number(cell, p, True, values + row * stride + target) < 0:
                    return -1
            elif target == TIME:
                if _number(cell, p, False, times + row) < 0:
                    return -1
            field += 1
            if p < end and p[0] == delimiter:
                p += 1
                continue
            break
        if field != width or (width == 1 and cell == p):  # a blank line is no row
            return -1
        if p < end:  # a line end: \n, \r\n or \r
            if p[0] == 13 and p + 1 < end and p[1] == 10:
                p += 1
            p += 1
        row += 1
    return row if row == rows else -1
