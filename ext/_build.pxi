# The build of the module that includes this, for `plantwatch --version`: the Cython that
# translated it and the numpy it was compiled against (setup.py passes both, and the flags, as
# macros), the C compiler and the time of compilation (gcc honours SOURCE_DATE_EPOCH for it).

cdef extern from *:
    """
    #if defined(__clang__)
    #define PLANTWATCH_CC "clang " __clang_version__
    #elif defined(__GNUC__)
    #define PLANTWATCH_CC "gcc " __VERSION__
    #else
    #define PLANTWATCH_CC "unknown"
    #endif
    #define PLANTWATCH_BUILT __DATE__ " " __TIME__
    #ifndef PLANTWATCH_CYTHON
    #define PLANTWATCH_CYTHON "unknown"
    #endif
    #ifndef PLANTWATCH_NUMPY
    #define PLANTWATCH_NUMPY "unknown"
    #endif
    #ifndef PLANTWATCH_CFLAGS
    #define PLANTWATCH_CFLAGS "unknown"
    #endif
    """
    const char *PLANTWATCH_CC
    const char *PLANTWATCH_BUILT
    const char *PLANTWATCH_CYTHON
    const char *PLANTWATCH_NUMPY
    const char *PLANTWATCH_CFLAGS

BUILD = {
    "cython": PLANTWATCH_CYTHON.decode(),
    "numpy": PLANTWATCH_NUMPY.decode(),
    "compiler": PLANTWATCH_CC.decode(),
    "flags": PLANTWATCH_CFLAGS.decode(),
    "built": PLANTWATCH_BUILT.decode(),
}
