# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False, auto_pickle=False
# cython: embedsignature=True, embedsignature.format=python
"""Compiled handlespace: the twin of ``rserpool.handlespace._handlespace_py``.

Same names, same results for the same calls (``rserpool/handlespace/SPEC.md``).
Never import this module directly: use ``rserpool.handlespace``.

Layout (all C memory comes from PyMem_Malloc, so tracemalloc sees it):

* every pool element is one C ``Entry`` holding its encoded Pool Element
  parameter (the bytes ``select`` returns, zero copy), its encoded ASAP
  transport (shared between PEs registered with the same transport object),
  its numeric state and its links into every index;
* per pool two intrusive treaps with parent pointers: the selection order
  (key, seq), with left-subtree weight sums for the weighted random engine
  (a pick reads one node per level), and the PE-identifier order; treap
  priorities are a keyed hash of the identifier, never the shared ``Random``;
* an open-addressing table identifier -> entry (identifiers are unique across
  pools), a binary heap of timers ordered by (deadline, pool order, identifier),
  intrusive per-home lists with 32-bit checksum sums and per-association lists;
* pools: a dict handle -> pool object (its C record inline) plus a treap in
  pool order.

Every public method refuses to be re-entered (RuntimeError) from code it runs
itself: an association's ``__eq__``/``__hash__``, a ``now`` or ``deadline``
object's arithmetic, a finalizer run by an allocation.  Like the twin, a
handlespace is not thread-safe: share one between threads under a lock.

Snapshots (``PoolElementEntry``) decode the transports and the policy from the
stored encodings only when those attributes are read.
"""

cimport cython
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from libc.string cimport memcpy, memset, memcmp
from libc.stdlib cimport qsort
from cpython.ref cimport PyObject, Py_INCREF, Py_DECREF, Py_XDECREF
from cpython.mem cimport PyMem_Malloc, PyMem_Free, PyMem_Realloc
from cpython.ref cimport _Py_REFCNT
from sys import getsizeof as _sys_getsizeof
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.tuple cimport PyTuple_GET_SIZE, PyTuple_GET_ITEM
from cpython.dict cimport PyDict_GetItem, PyDict_GetItemWithError, PyDict_DelItem
from cpython.long cimport PyLong_FromUnsignedLong, PyLong_FromUnsignedLongLong, PyLong_FromLongLong
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_FromDouble
from cpython.number cimport PyNumber_Index, PyNumber_Float

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    void* PyUnicode_DATA(object o)
    bint PyLong_CheckExact(object o)
    bint PyLong_Check(object o)
    bint PyFloat_CheckExact(object o)
    double PyLong_AsDouble(object o) except? -1.0

cdef extern from "<arpa/inet.h>" nogil:
    int inet_pton(int af, const char* src, void* dst)

cdef extern from "<sys/socket.h>" nogil:
    int AF_INET
    int AF_INET6

cdef extern from *:
    """
    #include "structmember.h"

    /* Fast read access to the fields of the wire classes: the getter of a
       getset descriptor (cdef class attributes) or the offset of a member
       descriptor (__slots__), resolved once per class; anything else goes
       through PyObject_GetAttr. */
    typedef struct {
        int mode;               /* 0 getattr, 1 getset, 2 member */
        int mtype;
        getter get;
        void *closure;
        Py_ssize_t offset;
        PyObject *name;
    } RspField;

    static int rsp_field_init(RspField *f, PyObject *cls, const char *name) {
        PyObject *d;
        f->mode = 0;
        f->get = NULL;
        f->closure = NULL;
        f->offset = 0;
        f->mtype = 0;
        Py_XDECREF(f->name);
        f->name = PyUnicode_InternFromString(name);
        if (!f->name) return -1;
        if (!PyType_Check(cls)) return 0;
        if (((PyTypeObject *)cls)->tp_getattro != PyObject_GenericGetAttr) return 0;
        d = _PyType_Lookup((PyTypeObject *)cls, f->name);
        if (!d) return 0;
        if (Py_IS_TYPE(d, &PyGetSetDescr_Type)) {
            PyGetSetDef *gs = ((PyGetSetDescrObject *)d)->d_getset;
            if (gs && gs->get) {
                f->mode = 1;
                f->get = gs->get;
                f->closure = gs->closure;
            }
        } else if (Py_IS_TYPE(d, &PyMemberDescr_Type)) {
            PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
            if (m && (m->type == T_OBJECT_EX || m->type == T_OBJECT) && !(m->flags & READ_RESTRICTED)) {
                f->mode = 2;
                f->mtype = m->type;
                f->offset = m->offset;
            }
        }
        return 0;
    }

    static PyObject *rsp_field_get(RspField *f, PyObject *obj) {
        if (f->mode == 1) return f->get(obj, f->closure);
        if (f->mode == 2) {
            PyObject *r = *(PyObject **)((char *)obj + f->offset);
            if (r) { Py_INCREF(r); return r; }
            if (f->mtype == T_OBJECT) { Py_RETURN_NONE; }
        }
        return PyObject_GetAttr(obj, f->name);
    }

    /* 1 and the value if o is an int (or subclass) that fits a long long. */
    static inline int rsp_as_ll(PyObject *o, long long *out) {
        int ovf = 0;
        long long v;
        if (!PyLong_Check(o)) return 0;
        v = PyLong_AsLongLongAndOverflow(o, &ovf);
        if (ovf) return 0;
        if (v == -1 && PyErr_Occurred()) { PyErr_Clear(); return 0; }
        *out = v;
        return 1;
    }

    /* RFC 5952 text of a packed IPv6 address, as the codec's decoder writes it
       (longest run of >= 2 zero words, the first on a tie; lowercase). */
    static int rsp_fmt6(const unsigned char *b, char *out) {
        unsigned int w[8];
        int i, j, best = -1, bestlen = 0, n = 0;
        for (i = 0; i < 8; i++) w[i] = ((unsigned int)b[2 * i] << 8) | b[2 * i + 1];
        i = 0;
        while (i < 8) {
            if (w[i] == 0) {
                j = i;
                while (j < 8 && w[j] == 0) j++;
                if (j - i > bestlen) { best = i; bestlen = j - i; }
                i = j;
            } else {
                i++;
            }
        }
        if (bestlen < 2) best = -1;
        for (i = 0; i < 8; i++) {
            if (i == best) {
                out[n++] = ':';
                out[n++] = ':';
                i += bestlen - 1;
                continue;
            }
            if (n > 0 && out[n - 1] != ':') out[n++] = ':';
            n += sprintf(out + n, "%x", w[i]);
        }
        out[n] = 0;
        return n;
    }

    typedef unsigned __int128 rsp_u128;
    #define rsp_bdata(o) ((const unsigned char *)PyBytes_AS_STRING(o))
    #define rsp_bsize(o) PyBytes_GET_SIZE(o)
    """
    ctypedef struct RspField:
        pass
    int rsp_field_init(RspField* f, object cls, const char* name) except -1
    object rsp_field_get(RspField* f, object obj)
    bint rsp_as_ll(object o, long long* out)
    int rsp_fmt6(const unsigned char* b, char* out) noexcept nogil
    ctypedef unsigned long long rsp_u128
    const unsigned char* rsp_bdata(PyObject* o) noexcept nogil
    Py_ssize_t rsp_bsize(PyObject* o) noexcept nogil

from ..constants import MAX32 as _MAX32_O, POLICY_VALUE_NAMES, PolicyType
from ..errors import (
    DataControlInconsistentError,
    EncodeError,
    InvalidPoolHandleError,
    InvalidValueError,
    NonUniqueIdentifierError,
    PolicyInconsistentError,
    ResourceLimitError,
    TransportInconsistentError,
    UnsupportedPolicyError,
)
from .. import wire as _wire

__all__ = [
    "IMPLEMENTATION", "Handlespace", "PoolElementEntry", "Random",
    "TIMER_NONE", "TIMER_KEEP_ALIVE_TRANSMISSION", "TIMER_KEEP_ALIVE_TIMEOUT",
    "TIMER_EXPIRY", "pe_checksum_sum", "fold_checksum",
]

IMPLEMENTATION = "compiled"

TIMER_NONE = 0
TIMER_KEEP_ALIVE_TRANSMISSION = 1
TIMER_KEEP_ALIVE_TIMEOUT = 2
TIMER_EXPIRY = 3

cdef long long LM32 = 0xFFFFFFFFLL
cdef uint64_t M32 = 0xFFFFFFFFULL
cdef uint32_t HEAP_NONE = 0xFFFFFFFFU

# the active codec (the classes the handlespace accepts and produces)
cdef object _PE = _wire.PoolElement
cdef object _PP = _wire.PoolPolicy
cdef object _SCTP = _wire.SctpTransport
cdef object _encode_parameter = _wire.encode_parameter
cdef object _decode_parameter = _wire.decode_parameter
cdef object _KINDS = (_wire.SctpTransport, _wire.TcpTransport, _wire.UdpTransport,
                      _wire.UdpLiteTransport, _wire.DccpTransport)
cdef PyObject* _KIND[5]
cdef unsigned int _KIND_PT[5]
_KIND_PT[0] = 0x0004   # SCTP
_KIND_PT[1] = 0x0005   # TCP
_KIND_PT[2] = 0x0006   # UDP
_KIND_PT[3] = 0x0007   # UDP-Lite
_KIND_PT[4] = 0x0003   # DCCP
for _i in range(5):
    _KIND[_i] = <PyObject*>_KINDS[_i]

cdef RspField F_PE_ID, F_PE_HOME, F_PE_LIFE, F_PE_USER, F_PE_POLICY, F_PE_ASAP
cdef RspField F_PP_TYPE, F_PP_VALUES
cdef RspField F_T_PORT[5]
cdef RspField F_T_ADDRS[5]
cdef RspField F_T_USE[2]
cdef RspField F_T_SC
memset(&F_PE_ID, 0, sizeof(RspField))
memset(&F_PE_HOME, 0, sizeof(RspField))
memset(&F_PE_LIFE, 0, sizeof(RspField))
memset(&F_PE_USER, 0, sizeof(RspField))
memset(&F_PE_POLICY, 0, sizeof(RspField))
memset(&F_PE_ASAP, 0, sizeof(RspField))
memset(&F_PP_TYPE, 0, sizeof(RspField))
memset(&F_PP_VALUES, 0, sizeof(RspField))
memset(F_T_PORT, 0, sizeof(F_T_PORT))
memset(F_T_ADDRS, 0, sizeof(F_T_ADDRS))
memset(F_T_USE, 0, sizeof(F_T_USE))
memset(&F_T_SC, 0, sizeof(RspField))
rsp_field_init(&F_PE_ID, _PE, "identifier")
rsp_field_init(&F_PE_HOME, _PE, "home_registrar")
rsp_field_init(&F_PE_LIFE, _PE, "registration_life")
rsp_field_init(&F_PE_USER, _PE, "user_transport")
rsp_field_init(&F_PE_POLICY, _PE, "policy")
rsp_field_init(&F_PE_ASAP, _PE, "asap_transport")
rsp_field_init(&F_PP_TYPE, _PP, "policy_type")
rsp_field_init(&F_PP_VALUES, _PP, "values")
for _i in range(5):
    rsp_field_init(&F_T_PORT[_i], _KINDS[_i], "port")
    rsp_field_init(&F_T_ADDRS[_i], _KINDS[_i], "addresses")
rsp_field_init(&F_T_USE[0], _KINDS[0], "transport_use")
rsp_field_init(&F_T_USE[1], _KINDS[1], "transport_use")
rsp_field_init(&F_T_SC, _KINDS[4], "service_code")

# --------------------------------------------------------------------------
# policies

cdef enum:
    P_RR = 0
    P_WRR = 1
    P_RAND = 2
    P_WRAND = 3
    P_PRI = 4
    P_LU = 5
    P_LUD = 6
    P_PLU = 7
    P_RLU = 8
    P_RPLU = 9
    P_RLUD = 10
    P_PLUD = 11
    P_RPLUD = 12
    P_WRDPF = 13
    P_LUDPF = 14
    P_LUDDPF = 15

cdef uint32_t _PT_CODE[16]
cdef int _PT_NVAL[16]
cdef bint _PT_ENGINE_B[16]
cdef int _PT_DEFAULT_INC[16]
cdef bint _PT_DEGRADING[16]

_codes = [(P_RR, 0x00000001, 0, 0, 1, 0), (P_WRR, 0x00000002, 1, 0, 1, 0),
          (P_RAND, 0x00000003, 0, 1, 0, 0), (P_WRAND, 0x00000004, 1, 1, 0, 0),
          (P_PRI, 0x00000005, 1, 0, 1, 0), (P_LU, 0x40000001, 1, 0, 1, 0),
          (P_LUD, 0x40000002, 2, 0, 1, 1), (P_PLU, 0x40000003, 2, 0, 1, 0),
          (P_RLU, 0x40000004, 1, 1, 1, 0), (P_RPLU, 0xB0001001, 2, 1, 1, 0),
          (P_RLUD, 0xB0001002, 2, 1, 1, 0), (P_PLUD, 0xB0001003, 2, 0, 1, 1),
          (P_RPLUD, 0xB0001004, 2, 1, 1, 0), (P_WRDPF, 0xB0002001, 3, 1, 0, 0),
          (P_LUDPF, 0xB0002002, 3, 0, 1, 0), (P_LUDDPF, 0xB0002003, 4, 0, 1, 1)]
for _idx, _code, _nval, _eb, _inc, _deg in _codes:
    _PT_CODE[_idx] = _code
    _PT_NVAL[_idx] = _nval
    _PT_ENGINE_B[_idx] = _eb
    _PT_DEFAULT_INC[_idx] = _inc
    _PT_DEGRADING[_idx] = _deg
if ({int(k): len(v) for k, v in POLICY_VALUE_NAMES.items()}
        != {c: n for _, c, n, _, _, _ in _codes}):
    raise ImportError("rserpool._c.handlespace is out of date with constants.POLICY_VALUE_NAMES")
if _MAX32_O != 0xFFFFFFFF:
    raise ImportError("rserpool._c.handlespace assumes MAX32 == 0xFFFFFFFF")
del _codes


cdef dict _POLICY_ENUM = {int(t): t for t in PolicyType}


cdef object _policy_obj(uint32_t ptype):
    """The policy type as the codec's PoolPolicy holds it."""
    return _POLICY_ENUM.get(ptype, ptype)


cdef inline int _policy_index(long long pt) noexcept nogil:
    if pt == 0x00000001LL:
        return P_RR
    if pt == 0x00000002LL:
        return P_WRR
    if pt == 0x00000003LL:
        return P_RAND
    if pt == 0x00000004LL:
        return P_WRAND
    if pt == 0x00000005LL:
        return P_PRI
    if pt == 0x40000001LL:
        return P_LU
    if pt == 0x40000002LL:
        return P_LUD
    if pt == 0x40000003LL:
        return P_PLU
    if pt == 0x40000004LL:
        return P_RLU
    if pt == 0xB0001001LL:
        return P_RPLU
    if pt == 0xB0001002LL:
        return P_RLUD
    if pt == 0xB0001003LL:
        return P_PLUD
    if pt == 0xB0001004LL:
        return P_RPLUD
    if pt == 0xB0002001LL:
        return P_WRDPF
    if pt == 0xB0002002LL:
        return P_LUDPF
    if pt == 0xB0002003LL:
        return P_LUDDPF
    return -1


# --------------------------------------------------------------------------
# xoshiro256** seeded through splitmix64

cdef inline uint64_t _rotl(uint64_t x, int k) noexcept nogil:
    return (x << k) | (x >> (64 - k))


cdef inline uint64_t _xnext(uint64_t* s) noexcept nogil:
    cdef uint64_t result = _rotl(s[1] * 5ULL, 7) * 9ULL
    cdef uint64_t t = s[1] << 17
    s[2] ^= s[0]
    s[3] ^= s[1]
    s[1] ^= s[2]
    s[0] ^= s[3]
    s[2] ^= t
    s[3] = _rotl(s[3], 45)
    return result


cdef inline uint64_t _splitmix(uint64_t* s) noexcept nogil:
    cdef uint64_t z
    s[0] += 0x9E3779B97F4A7C15ULL
    z = s[0]
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef void _xseed(uint64_t* st, object seed) except *:
    cdef uint64_t s = <uint64_t>(seed & 0xFFFFFFFFFFFFFFFF)
    cdef int i
    for i in range(4):
        st[i] = _splitmix(&s)


@cython.final
cdef class Random:
    """xoshiro256** seeded through splitmix64; bit for bit the same in both
    implementations, so the same seed gives the same selections."""

    cdef uint64_t _s[4]

    def __init__(self, seed=0):
        _xseed(self._s, seed)

    def next64(self):
        """The next 64-bit value."""
        return PyLong_FromUnsignedLongLong(_xnext(self._s))

    def take(self, n):
        """The next ``n`` values."""
        return [PyLong_FromUnsignedLongLong(_xnext(self._s)) for _ in range(n)]


# --------------------------------------------------------------------------
# checksums

cdef inline uint32_t _handle_sum(const unsigned char* h, Py_ssize_t n) noexcept nogil:
    cdef uint32_t total = 0
    cdef Py_ssize_t i = 0
    while i + 1 < n:
        total += (<uint32_t>h[i] << 8) | h[i + 1]
        i += 2
    if i < n:
        total += <uint32_t>h[i] << 8
    return total


cdef inline uint32_t _fold(uint32_t s) noexcept nogil:
    cdef uint64_t x = s
    while x >> 16:
        x = (x & 0xFFFF) + (x >> 16)
    return (~x) & 0xFFFF


def pe_checksum_sum(pool_handle, identifier):
    """s_PE: the 16-bit big-endian words of the pool handle (padded on its own
    to even length) plus the two words of the PE identifier, as a 32-bit sum."""
    cdef long long ident
    cdef uint32_t total
    if type(pool_handle) is bytes and rsp_as_ll(identifier, &ident) and 0 <= ident <= LM32:
        total = _handle_sum(<const unsigned char*>PyBytes_AS_STRING(pool_handle),
                            PyBytes_GET_SIZE(pool_handle))
        total += <uint32_t>(ident >> 16) + <uint32_t>(ident & 0xFFFF)
        return PyLong_FromUnsignedLong(total)
    h = pool_handle + b"\0" if len(pool_handle) & 1 else pool_handle
    t = 0
    for i in range(0, len(h), 2):
        t += (h[i] << 8) | h[i + 1]
    t += (identifier >> 16) + (identifier & 0xFFFF)
    return t & 0xFFFFFFFF


def fold_checksum(sum32):
    """Fold carries into 16 bits and complement (0xFFFF for an empty sum)."""
    return PyLong_FromUnsignedLong(_fold(<uint32_t>(sum32 & 0xFFFFFFFF)))


# --------------------------------------------------------------------------
# C structures

cdef enum:
    F_RARE = 1          # the entry has a _Rare object in Handlespace._rare
    F_LU_INT = 2        # last_update was an int (stored exactly as a double)

cdef struct Tree:
    Entry* root
    Entry* first
    Entry* last
    uint64_t total      # engine B: sum of the weights

cdef struct HomeS:
    uint32_t home
    uint32_t sum
    Py_ssize_t count
    Entry* head
    PyObject* obj       # the _Home object (owned by Handlespace._homes)
    PyObject* key       # its dict key (an int)

cdef struct AssocS:
    Py_ssize_t count
    Py_ssize_t cap
    Entry** members     # unordered; Entry.aidx is the position
    PyObject* key

cdef struct PoolS:
    Tree sel            # selection order (tree 0)
    Entry* ids          # root of the identifier order (tree 1)
    uint64_t global_seq
    PyObject* handle    # bytes, owned
    PoolS* pl           # pool-order treap
    PoolS* pr
    uint32_t count      # identifiers are unique 32-bit values: no pool holds more
    uint32_t nzero      # engine B entries of weight 0
    uint32_t hsum
    uint32_t prio
    int32_t use
    uint8_t pol
    uint8_t kidx
    uint8_t engine_b
    uint8_t default_inc

cdef struct Entry:
    # selection (0) and identifier (1) trees
    Entry* lc[2]
    Entry* rc[2]
    Entry* up[2]
    uint64_t k1         # selection key; the round counter for WRR
    uint64_t seq
    uint64_t lsum       # engine B: weight sum of the left subtree
    PyObject* encoded   # bytes, owned
    PoolS* pool
    uint32_t identifier
    uint32_t virtual_counter
    uint32_t degradation
    uint32_t w          # engine B weight
    uint32_t unreach
    uint32_t home
    uint64_t selection_counter
    int32_t life
    uint32_t heap_idx
    uint32_t aidx
    uint16_t pol_off
    uint8_t timer
    uint8_t flags
    double last_update
    PyObject* asap      # encoded ASAP transport (bytes, owned) or NULL
    HomeS* hs
    Entry* hprev
    Entry* hnext
    AssocS* assoc

cdef struct HeapItem:
    double deadline
    PoolS* pool
    Entry* e
    uint32_t ident

cdef inline uint64_t _sat(uint64_t x) noexcept nogil:
    return x if x < M32 else M32


# --------------------------------------------------------------------------
# keys and weights

cdef inline uint32_t _val(Entry* e, int i) noexcept nogil:
    """Policy value i (layout order) from the entry's encoding."""
    cdef const unsigned char* q = rsp_bdata(e.encoded) + e.pol_off + 8 + 4 * i
    return (<uint32_t>q[0] << 24) | (<uint32_t>q[1] << 16) | (<uint32_t>q[2] << 8) | q[3]


cdef inline void _set_key(int pol, Entry* e) noexcept nogil:
    """k1 from the policy values (WRR: k1 is the round counter, left alone)."""
    cdef uint64_t k = 0
    if pol == P_WRR:
        return
    if pol == P_PRI:
        k = M32 - _val(e, 0)
    elif pol == P_LU:
        k = _val(e, 0)
    elif pol == P_LUD:
        k = _sat(<uint64_t>_val(e, 0) + e.degradation)
    elif pol == P_PLU:
        k = _sat(<uint64_t>_val(e, 0) + _val(e, 1))
    elif pol == P_PLUD:
        k = _sat(<uint64_t>_val(e, 0) + _val(e, 1) + e.degradation)
    elif pol == P_LUDPF:
        k = _sat(<uint64_t>_val(e, 0) + <uint64_t>_val(e, 2) * <uint64_t>_val(e, 1))
    elif pol == P_LUDDPF:
        k = _sat(<uint64_t>_val(e, 0) + e.degradation
                 + <uint64_t>_val(e, 3) * <uint64_t>_val(e, 2))
    e.k1 = k


cdef inline uint32_t _weight(int pol, Entry* e) noexcept nogil:
    cdef int64_t x
    cdef rsp_u128 prod
    cdef uint32_t wt
    if pol == P_RAND:
        return 1
    if pol == P_WRAND:
        return _val(e, 0)
    if pol == P_RLU:
        x = <int64_t>M32 - _val(e, 0)
    elif pol == P_RPLU:
        x = <int64_t>M32 - _val(e, 0) - _val(e, 1)
    elif pol == P_RLUD:
        x = <int64_t>M32 - _val(e, 0) - e.degradation
    elif pol == P_RPLUD:
        x = <int64_t>M32 - _val(e, 0) - _val(e, 1) - e.degradation
    elif pol == P_WRDPF:
        wt = _val(e, 0)
        prod = <rsp_u128>wt * <rsp_u128>_val(e, 2) * <rsp_u128>_val(e, 1)
        prod = (prod + <rsp_u128>(M32 // 2)) // <rsp_u128>M32
        if prod > <rsp_u128>wt:
            return 1
        return wt - <uint32_t>prod
    else:
        return 0
    return <uint32_t>x if x > 1 else 1


# --------------------------------------------------------------------------
# treaps with parent pointers over entries (t = 0: selection, 1: identifier)

cdef inline bint _lt(int t, Entry* a, Entry* b) noexcept nogil:
    if t == 0:
        if a.k1 != b.k1:
            return a.k1 < b.k1
        if a.virtual_counter != b.virtual_counter:
            return a.virtual_counter < b.virtual_counter
        return a.seq < b.seq
    return a.identifier < b.identifier


# treap priorities: a keyed hash of the identifier; the key comes from the
# interpreter's per-process hash secret, so nobody can choose identifiers that
# unbalance the trees (no I/O, and never the shared Random)
cdef uint32_t _PRIO_KEY = 0x9E3779B9U
_PRIO_KEY = <uint32_t>(hash(b"rserpool.handlespace treap priorities") & 0xFFFFFFFF)


cdef inline uint32_t _prio(Entry* e) noexcept nogil:
    cdef uint32_t h = e.identifier ^ _PRIO_KEY
    h ^= h >> 16
    h *= 0x85EBCA6BU
    h ^= h >> 13
    h *= 0xC2B2AE35U
    h ^= h >> 16
    return h


cdef uint64_t _subsum(int t, Entry* x) noexcept nogil:
    """Weight sum of the subtree at x, the slow way (check() only)."""
    cdef uint64_t s = 0
    while x != NULL:
        s += x.lsum + x.w
        x = x.rc[t]
    return s


cdef inline void _rot_up(Entry** root, int t, Entry* x, bint summed) noexcept nogil:
    cdef Entry* p = x.up[t]
    cdef Entry* g = p.up[t]
    cdef Entry* b
    if p.lc[t] == x:
        b = x.rc[t]
        p.lc[t] = b
        x.rc[t] = p
        if summed:          # p's left subtree shrinks to b
            p.lsum -= x.lsum + x.w
    else:
        b = x.lc[t]
        p.rc[t] = b
        x.lc[t] = p
        if summed:          # x's left subtree grows by p and p's left subtree
            x.lsum += p.lsum + p.w
    if b != NULL:
        b.up[t] = p
    p.up[t] = x
    x.up[t] = g
    if g == NULL:
        root[0] = x
    elif g.lc[t] == p:
        g.lc[t] = x
    else:
        g.rc[t] = x


cdef inline Entry* _next(int t, Entry* e) noexcept nogil:
    cdef Entry* p
    if e.rc[t] != NULL:
        e = e.rc[t]
        while e.lc[t] != NULL:
            e = e.lc[t]
        return e
    p = e.up[t]
    while p != NULL and p.rc[t] == e:
        e = p
        p = p.up[t]
    return p


cdef inline Entry* _prev(int t, Entry* e) noexcept nogil:
    cdef Entry* p
    if e.lc[t] != NULL:
        e = e.lc[t]
        while e.rc[t] != NULL:
            e = e.rc[t]
        return e
    p = e.up[t]
    while p != NULL and p.lc[t] == e:
        e = p
        p = p.up[t]
    return p


cdef inline Entry* _leftmost(int t, Entry* e) noexcept nogil:
    if e != NULL:
        while e.lc[t] != NULL:
            e = e.lc[t]
    return e


cdef void _tree_insert(Tree* tr, int t, Entry* e, bint summed, bint ends) noexcept nogil:
    """Insert e into tree t.  With ends, tr.first and tr.last are kept (and
    used as shortcuts); otherwise only tr.root is used."""
    cdef Entry* cur
    cdef Entry* p
    cdef Entry* c
    cdef uint32_t pr
    e.lc[t] = NULL
    e.rc[t] = NULL
    if summed:
        e.lsum = 0
        tr.total += e.w
    if tr.root == NULL:
        e.up[t] = NULL
        tr.root = e
        if ends:
            tr.first = e
            tr.last = e
        return
    if ends and not _lt(t, e, tr.last):
        p = tr.last
        p.rc[t] = e
        tr.last = e
    elif ends and _lt(t, e, tr.first):
        p = tr.first
        p.lc[t] = e
        tr.first = e
    else:
        cur = tr.root
        while True:
            if _lt(t, e, cur):
                if cur.lc[t] == NULL:
                    cur.lc[t] = e
                    break
                cur = cur.lc[t]
            else:
                if cur.rc[t] == NULL:
                    cur.rc[t] = e
                    break
                cur = cur.rc[t]
        p = cur
    e.up[t] = p
    if summed:
        c = e
        cur = p
        while cur != NULL:      # branch-free: add w where the path goes left
            cur.lsum += e.w & (0 - <uint64_t>(cur.lc[t] == c))
            c = cur
            cur = cur.up[t]
    pr = _prio(e)
    while e.up[t] != NULL and _prio(e.up[t]) < pr:
        _rot_up(&tr.root, t, e, summed)


cdef void _tree_remove(Tree* tr, int t, Entry* e, bint summed, bint ends) noexcept nogil:
    cdef Entry* c
    cdef Entry* p
    if ends:
        if tr.first == e:
            tr.first = _next(t, e)
        if tr.last == e:
            tr.last = _prev(t, e)
    while e.lc[t] != NULL and e.rc[t] != NULL:
        if _prio(e.lc[t]) > _prio(e.rc[t]):
            c = e.lc[t]
        else:
            c = e.rc[t]
        _rot_up(&tr.root, t, c, summed)
    if summed:
        tr.total -= e.w
        c = e
        p = e.up[t]
        while p != NULL:
            p.lsum -= e.w & (0 - <uint64_t>(p.lc[t] == c))
            c = p
            p = p.up[t]
    c = e.lc[t] if e.lc[t] != NULL else e.rc[t]
    p = e.up[t]
    if c != NULL:
        c.up[t] = p
    if p == NULL:
        tr.root = c
    elif p.lc[t] == e:
        p.lc[t] = c
    else:
        p.rc[t] = c
    e.lc[t] = NULL
    e.rc[t] = NULL
    e.up[t] = NULL


cdef inline void _ids_insert(PoolS* p, Entry* e) noexcept nogil:
    cdef Tree tr
    tr.root = p.ids
    tr.first = NULL
    tr.last = NULL
    _tree_insert(&tr, 1, e, False, False)
    p.ids = tr.root


cdef inline void _ids_remove(PoolS* p, Entry* e) noexcept nogil:
    cdef Tree tr
    tr.root = p.ids
    tr.first = NULL
    tr.last = NULL
    _tree_remove(&tr, 1, e, False, False)
    p.ids = tr.root


cdef inline void _sel_insert(PoolS* p, Entry* e) noexcept nogil:
    _tree_insert(&p.sel, 0, e, p.engine_b, True)


cdef inline void _sel_remove(PoolS* p, Entry* e) noexcept nogil:
    _tree_remove(&p.sel, 0, e, p.engine_b, True)


cdef inline Entry* _pick(Entry* cur, uint64_t r) noexcept nogil:
    """The entry whose cumulative weight interval (in seq order) holds r."""
    while cur != NULL:
        if r < cur.lsum:
            cur = cur.lc[0]
            continue
        r -= cur.lsum
        if r < cur.w:
            return cur
        r -= cur.w
        cur = cur.rc[0]
    return NULL


cdef inline Entry* _id_after(Entry* cur, long long after) noexcept nogil:
    """The entry with the smallest identifier > after."""
    cdef Entry* best = NULL
    while cur != NULL:
        if <long long>cur.identifier > after:
            best = cur
            cur = cur.lc[1]
        else:
            cur = cur.rc[1]
    return best


# --------------------------------------------------------------------------
# pool order: (len(handle), handle); a treap without parent pointers

cdef inline int _pcmp(const char* a, Py_ssize_t alen, const char* b, Py_ssize_t blen) noexcept nogil:
    cdef int c
    if alen != blen:
        return -1 if alen < blen else 1
    c = memcmp(a, b, alen)
    return -1 if c < 0 else (1 if c > 0 else 0)


cdef inline const char* _hdata(PoolS* p) noexcept nogil:
    return <const char*>rsp_bdata(p.handle)


cdef inline Py_ssize_t _hlen(PoolS* p) noexcept nogil:
    return rsp_bsize(p.handle)


cdef inline bint _plt(PoolS* a, PoolS* b) noexcept nogil:
    return _pcmp(_hdata(a), _hlen(a), _hdata(b), _hlen(b)) < 0


cdef void _ptree_split(PoolS* t, PoolS* key, PoolS** l, PoolS** r) noexcept nogil:
    if t == NULL:
        l[0] = NULL
        r[0] = NULL
    elif _plt(t, key):
        _ptree_split(t.pr, key, &t.pr, r)
        l[0] = t
    else:
        _ptree_split(t.pl, key, l, &t.pl)
        r[0] = t


cdef PoolS* _ptree_merge(PoolS* a, PoolS* b) noexcept nogil:
    if a == NULL:
        return b
    if b == NULL:
        return a
    if a.prio > b.prio:
        a.pr = _ptree_merge(a.pr, b)
        return a
    b.pl = _ptree_merge(a, b.pl)
    return b


cdef PoolS* _ptree_insert(PoolS* t, PoolS* n) noexcept nogil:
    if t == NULL:
        n.pl = NULL
        n.pr = NULL
        return n
    if n.prio > t.prio:
        _ptree_split(t, n, &n.pl, &n.pr)
        return n
    if _plt(n, t):
        t.pl = _ptree_insert(t.pl, n)
    else:
        t.pr = _ptree_insert(t.pr, n)
    return t


cdef PoolS* _ptree_remove(PoolS* t, PoolS* n) noexcept nogil:
    if t == NULL:
        return NULL
    if t == n:
        return _ptree_merge(t.pl, t.pr)
    if _plt(n, t):
        t.pl = _ptree_remove(t.pl, n)
    else:
        t.pr = _ptree_remove(t.pr, n)
    return t


cdef PoolS* _ptree_lower(PoolS* t, const char* h, Py_ssize_t hlen, bint strict) noexcept nogil:
    """The first pool >= (hlen, h) (> when strict)."""
    cdef PoolS* best = NULL
    cdef int c
    while t != NULL:
        c = _pcmp(_hdata(t), _hlen(t), h, hlen)
        if c > 0 or (c == 0 and not strict):
            best = t
            t = t.pl
        else:
            t = t.pr
    return best


cdef inline PoolS* _ptree_next(PoolS* root, PoolS* p) noexcept nogil:
    return _ptree_lower(root, _hdata(p), _hlen(p), True)


cdef inline PoolS* _ptree_first(PoolS* t) noexcept nogil:
    if t == NULL:
        return NULL
    while t.pl != NULL:
        t = t.pl
    return t


cdef inline bint _pool_lt_id(PoolS* pa, uint32_t ia, PoolS* pb, uint32_t ib) noexcept nogil:
    cdef int c
    if pa != pb:
        c = _pcmp(_hdata(pa), _hlen(pa), _hdata(pb), _hlen(pb))
        if c != 0:
            return c < 0
    return ia < ib


cdef int _entry_order_cmp(const void* a, const void* b) noexcept nogil:
    cdef Entry* x = (<Entry**>a)[0]
    cdef Entry* y = (<Entry**>b)[0]
    if _pool_lt_id(x.pool, x.identifier, y.pool, y.identifier):
        return -1
    if _pool_lt_id(y.pool, y.identifier, x.pool, x.identifier):
        return 1
    return 0


# --------------------------------------------------------------------------
# timers: binary heap of (deadline, pool order, identifier)

cdef inline bint _hlt(HeapItem* a, HeapItem* b) noexcept nogil:
    if a.deadline < b.deadline:
        return True
    if a.deadline > b.deadline:
        return False
    return _pool_lt_id(a.pool, a.ident, b.pool, b.ident)


# --------------------------------------------------------------------------
# small Python-side objects

@cython.final
cdef class _Pool:
    """A pool: its C record inline (no Python fields, so not tracked by the GC)."""
    cdef PoolS s

    def __dealloc__(self):
        Py_XDECREF(self.s.handle)
        self.s.handle = NULL


@cython.final
cdef class _Home:
    cdef HomeS s
    cdef object key


@cython.final
cdef class _Assoc:
    cdef AssocS s
    cdef object key

    def __dealloc__(self):
        PyMem_Free(self.s.members)
        self.s.members = NULL


@cython.final
cdef class _Rare:
    """What a few entries need besides the encodings: the user transport as
    given when its text form is not the decoder's, an ASAP transport that is
    not an encodable SctpTransport, a `now` that is neither float nor int."""
    cdef object user          # None: decode from the encoding
    cdef object asap
    cdef object last_update
    cdef bint has_asap
    cdef bint has_lu


# --------------------------------------------------------------------------
# snapshots

_FIELDS = ("pool_handle", "identifier", "home_registrar", "registration_life",
           "user_transport", "asap_transport", "policy", "encoded", "association",
           "seq", "round_counter", "virtual_counter", "degradation",
           "selection_counter", "unreachability_reports", "last_update", "timer",
           "deadline")


@cython.final
@cython.freelist(16)
cdef class PoolElementEntry:
    """An immutable snapshot of one pool element's entry."""

    cdef object _handle
    cdef object _encoded
    cdef object _asap         # bytes (akind 1) or the object (akind 2)
    cdef object _assoc
    cdef object _user         # override or decoded (cached)
    cdef object _policy       # decoded (cached)
    cdef object _asap_dec     # decoded (cached)
    cdef object _lu_obj
    cdef tuple _vals          # built by __init__
    cdef uint64_t _seq, _round, _selected, _unreach
    cdef double _lu, _deadline
    cdef uint32_t _ident, _home, _virtual, _deg
    cdef int32_t _life
    cdef uint16_t _pol_off
    cdef uint8_t _timer, _akind, _lukind   # lukind: 0 float, 1 int, 2 object

    _fields = _FIELDS

    def __init__(self, **values):
        self._vals = tuple([values[f] for f in _FIELDS])

    @property
    def pool_handle(self):
        return self._vals[0] if self._vals is not None else self._handle

    @property
    def identifier(self):
        return self._vals[1] if self._vals is not None else PyLong_FromUnsignedLong(self._ident)

    @property
    def home_registrar(self):
        return self._vals[2] if self._vals is not None else PyLong_FromUnsignedLong(self._home)

    @property
    def registration_life(self):
        return self._vals[3] if self._vals is not None else self._life

    @property
    def user_transport(self):
        if self._vals is not None:
            return self._vals[4]
        if self._user is None:
            self._user = _decode_parameter(self._encoded[16:self._pol_off])
        return self._user

    @property
    def asap_transport(self):
        if self._vals is not None:
            return self._vals[5]
        if self._akind == 2:
            return self._asap
        if self._akind == 1:
            if self._asap_dec is None:
                self._asap_dec = _decode_parameter(self._asap)
            return self._asap_dec
        return None

    @property
    def policy(self):
        if self._vals is not None:
            return self._vals[6]
        if self._policy is None:
            self._policy = _decode_parameter(self._encoded[self._pol_off:])
        return self._policy

    @property
    def encoded(self):
        return self._vals[7] if self._vals is not None else self._encoded

    @property
    def association(self):
        return self._vals[8] if self._vals is not None else self._assoc

    @property
    def seq(self):
        return self._vals[9] if self._vals is not None else PyLong_FromUnsignedLongLong(self._seq)

    @property
    def round_counter(self):
        return self._vals[10] if self._vals is not None else PyLong_FromUnsignedLongLong(self._round)

    @property
    def virtual_counter(self):
        return self._vals[11] if self._vals is not None else PyLong_FromUnsignedLong(self._virtual)

    @property
    def degradation(self):
        return self._vals[12] if self._vals is not None else PyLong_FromUnsignedLong(self._deg)

    @property
    def selection_counter(self):
        return (self._vals[13] if self._vals is not None
                else PyLong_FromUnsignedLongLong(self._selected))

    @property
    def unreachability_reports(self):
        return (self._vals[14] if self._vals is not None
                else PyLong_FromUnsignedLongLong(self._unreach))

    @property
    def last_update(self):
        if self._vals is not None:
            return self._vals[15]
        if self._lukind == 0:
            return PyFloat_FromDouble(self._lu)
        if self._lukind == 1:
            return PyLong_FromLongLong(<long long>self._lu)
        return self._lu_obj

    @property
    def timer(self):
        return self._vals[16] if self._vals is not None else self._timer

    @property
    def deadline(self):
        if self._vals is not None:
            return self._vals[17]
        if self._timer == 0:
            return None
        return PyFloat_FromDouble(self._deadline)

    @property
    def pool_element(self):
        """The wire ``PoolElement`` (with the ASAP transport)."""
        return _PE(self.identifier, self.home_registrar, self.registration_life,
                   self.user_transport, self.policy, self.asap_transport)

    def to_dict(self):
        out = {}
        for f in _FIELDS:
            v = getattr(self, f)
            out[f] = v.to_dict() if hasattr(v, "to_dict") else v
        return out

    def __eq__(self, other):
        if not isinstance(other, PoolElementEntry):
            return NotImplemented
        for f in _FIELDS:
            if not (getattr(self, f) == getattr(other, f)):
                return False
        return True

    def __ne__(self, other):
        r = self.__eq__(other)
        return r if r is NotImplemented else not r

    def __hash__(self):
        return hash((self.pool_handle, self.identifier, self.seq))

    def __repr__(self):
        return (f"PoolElementEntry(pool_handle={self.pool_handle!r}, "
                f"identifier=0x{self.identifier:08x}, home=0x{self.home_registrar:08x}, "
                f"seq={self.seq})")


# --------------------------------------------------------------------------
# encoding (the common cases; anything else goes through the codec)

cdef inline void _put16(unsigned char* q, unsigned int v) noexcept nogil:
    q[0] = (v >> 8) & 0xFF
    q[1] = v & 0xFF


cdef inline void _put32(unsigned char* q, uint32_t v) noexcept nogil:
    q[0] = (v >> 24) & 0xFF
    q[1] = (v >> 16) & 0xFF
    q[2] = (v >> 8) & 0xFF
    q[3] = v & 0xFF


cdef inline uint32_t _get32(const unsigned char* q) noexcept nogil:
    return (<uint32_t>q[0] << 24) | (<uint32_t>q[1] << 16) | (<uint32_t>q[2] << 8) | q[3]


cdef inline unsigned int _get16(const unsigned char* q) noexcept nogil:
    return (<unsigned int>q[0] << 8) | q[1]


cdef int _enc_address(PyObject* text, unsigned char* out, int* canon) noexcept:
    """Write an IPv4/IPv6 address parameter for text; its size, or -1 to let
    the codec handle it.  canon is cleared when the decoder would not give
    the same text back."""
    cdef char cb[48]
    cdef char fmt[48]
    cdef Py_ssize_t k, i
    cdef const char* s
    cdef char ch
    cdef bint v6 = False
    cdef object o = <object>text
    if type(o) is not str or not PyUnicode_IS_ASCII(o):
        return -1
    k = PyUnicode_GET_LENGTH(o)
    if k <= 0 or k > 45:
        return -1
    s = <const char*>PyUnicode_DATA(o)
    for i in range(k):
        ch = s[i]
        if ch == 58:
            v6 = True
        elif not ((48 <= ch <= 57) or ch == 46 or (97 <= ch <= 102) or (65 <= ch <= 70)):
            return -1
        cb[i] = ch
    cb[k] = 0
    if v6:
        if inet_pton(AF_INET6, cb, out + 4) != 1:
            return -1
        _put16(out, 0x0002)
        _put16(out + 2, 20)
        if rsp_fmt6(out + 4, fmt) != k or memcmp(fmt, cb, k) != 0:
            canon[0] = 0
        return 20
    if inet_pton(AF_INET, cb, out + 4) != 1:
        return -1
    _put16(out, 0x0001)
    _put16(out + 2, 8)
    return 8


cdef Py_ssize_t _enc_transport(object t, int kidx, unsigned char* buf, int* canon) except -2:
    """Encode a transport of kind kidx into buf (room for 12 + 16 * 20 bytes);
    its size, or -1 to let the codec handle it."""
    cdef long long port, second = 0, sc = 0
    cdef Py_ssize_t n, i, pos
    cdef int r
    port_o = rsp_field_get(&F_T_PORT[kidx], t)
    if not rsp_as_ll(port_o, &port) or port < 0 or port > 0xFFFF:
        return -1
    if kidx <= 1:
        use_o = rsp_field_get(&F_T_USE[kidx], t)
        if not rsp_as_ll(use_o, &second) or second < 0 or second > 0xFFFF:
            return -1
    elif kidx == 4:
        sc_o = rsp_field_get(&F_T_SC, t)
        if not rsp_as_ll(sc_o, &sc) or sc < 0 or sc > LM32:
            return -1
    addrs = rsp_field_get(&F_T_ADDRS[kidx], t)
    if type(addrs) is not tuple:
        return -1
    n = PyTuple_GET_SIZE(addrs)
    if kidx == 0:
        if n < 1 or n > 16:
            return -1
    elif n != 1:
        return -1
    _put16(buf, _KIND_PT[kidx])
    _put16(buf + 4, <unsigned int>port)
    _put16(buf + 6, <unsigned int>second)
    pos = 8
    if kidx == 4:
        _put32(buf + 8, <uint32_t>sc)
        pos = 12
    for i in range(n):
        r = _enc_address(PyTuple_GET_ITEM(addrs, i), buf + pos, canon)
        if r < 0:
            return -1
        pos += r
    _put16(buf + 2, <unsigned int>pos)
    return pos


cdef Py_ssize_t _enc_policy(uint32_t ptype, object values, unsigned char* buf) except -2:
    """Encode a policy (up to 64 values) into buf; its size, or -1."""
    cdef Py_ssize_t n, i
    cdef long long v
    if type(values) is not tuple:
        return -1
    n = PyTuple_GET_SIZE(values)
    if n > 64:
        return -1
    _put16(buf, 0x0008)
    _put16(buf + 2, <unsigned int>(8 + 4 * n))
    _put32(buf + 4, ptype)
    for i in range(n):
        if not rsp_as_ll(<object>PyTuple_GET_ITEM(values, i), &v) or v < 0 or v > LM32:
            return -1
        _put32(buf + 8 + 4 * i, <uint32_t>v)
    return 8 + 4 * n


cdef object _asap_bytes(object asap):
    """The encoded ASAP transport when it is an SctpTransport whose decoding
    gives it back; None otherwise (the object itself is then kept)."""
    cdef unsigned char buf[400]
    cdef int canon = 1
    cdef Py_ssize_t n
    if type(asap) is not _SCTP:
        return None
    n = _enc_transport(asap, 0, buf, &canon)
    if n < 0 or not canon:
        return None
    return PyBytes_FromStringAndSize(<char*>buf, n)


cdef inline Py_ssize_t _clamp_index(object o) except? -1:
    """An int-like count as Py_ssize_t, saturated."""
    cdef long long v
    if rsp_as_ll(o, &v):
        if v > 0x3FFFFFFFFFFFFFFFLL:
            return 0x3FFFFFFFFFFFFFFFLL
        if v < -0x3FFFFFFFFFFFFFFFLL:
            return -0x3FFFFFFFFFFFFFFFLL
        return <Py_ssize_t>v
    o = PyNumber_Index(o)
    return 0x3FFFFFFFFFFFFFFFLL if o > 0 else -0x3FFFFFFFFFFFFFFFLL


cdef object _int_setting(object value, str name, long long minimum):
    if not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return value


cdef long long _setting_c(object value) except? -1:
    cdef long long v
    if rsp_as_ll(value, &v):
        return v
    value = PyNumber_Index(value)
    return 0x3FFFFFFFFFFFFFFFLL if value > 0 else -0x3FFFFFFFFFFFFFFFLL


# --------------------------------------------------------------------------
# the handlespace

@cython.final
@cython.no_gc_clear
cdef class Handlespace:
    """A registrar's handlespace.  See ``SPEC.md`` for every rule.

    :param own_id: this registrar's ID (informational).
    :param seed: seed of the shared :class:`Random`.
    :param max_increment: RSPLIB's MaxIncrement (0: each policy's default).
    :param max_bad_pe_reports: unreachability reports that remove a PE.
    :param max_handle_length: longest pool handle accepted (RSPLIB: 32).
    :param max_pools: capacity limit on pools.
    :param max_elements: capacity limit on pool elements.
    """

    cdef dict _pools          # handle -> _Pool
    cdef dict _homes          # home registrar ID -> _Home
    cdef dict _assocs         # association -> _Assoc
    cdef dict _rare           # identifier -> _Rare
    cdef object _own_id
    cdef bint _busy
    cdef object _o_inc, _o_bad, _o_hlen, _o_pools, _o_elements
    cdef long long _max_inc, _max_bad, _max_hlen, _max_pools, _max_elements
    cdef uint64_t _rs[4]
    cdef uint64_t _prio_state
    # identifier table (open addressing, linear probing)
    cdef uint32_t* _tkeys
    cdef Entry** _tvals
    cdef size_t _tcap
    cdef int _tshift
    cdef Py_ssize_t _n
    # timers
    cdef HeapItem* _heap
    cdef size_t _hn, _hcap
    # pools in pool order
    cdef PoolS* _proot
    # one-entry caches
    cdef HomeS* _last_home
    cdef object _asap_obj
    cdef object _asap_enc

    def __cinit__(self):
        self._pools = {}
        self._homes = {}
        self._assocs = {}
        self._rare = {}
        self._tkeys = NULL
        self._tvals = NULL
        self._tcap = 0
        self._n = 0
        self._heap = NULL
        self._hn = 0
        self._hcap = 0
        self._proot = NULL
        self._last_home = NULL
        self._own_id = 0
        self.max_increment = 0
        self.max_bad_pe_reports = 3
        self.max_handle_length = 32
        self.max_pools = 1_000_000
        self.max_elements = 10_000_000
        self._table_init(16)

    def __init__(self, *, own_id=0, seed=0, max_increment=0, max_bad_pe_reports=3,
                 max_handle_length=32, max_pools=1_000_000, max_elements=10_000_000):
        _int_setting(max_increment, "max_increment", 0)
        _int_setting(max_bad_pe_reports, "max_bad_pe_reports", 1)
        _int_setting(max_handle_length, "max_handle_length", 1)
        _int_setting(max_pools, "max_pools", 1)
        _int_setting(max_elements, "max_elements", 1)
        if self._busy:
            raise RuntimeError("the handlespace was called from code it was running; not allowed")
        self._clear()
        self._table_init(16)
        self._own_id = own_id
        self.max_increment = max_increment
        self.max_bad_pe_reports = max_bad_pe_reports
        self.max_handle_length = max_handle_length
        self.max_pools = max_pools
        self.max_elements = max_elements
        _xseed(self._rs, seed)
        self._prio_state = 0x5EED5EED12345678ULL
        self._asap_obj = None
        self._asap_enc = None

    def __dealloc__(self):
        self._free_entries()
        PyMem_Free(self._tkeys)
        PyMem_Free(self._tvals)
        PyMem_Free(self._heap)
        self._tkeys = NULL
        self._tvals = NULL
        self._heap = NULL

    cdef void _free_entries(self) noexcept:
        cdef size_t i
        cdef Entry* e
        if self._tkeys == NULL:
            return
        for i in range(self._tcap):
            if self._tkeys[i] != 0:
                e = self._tvals[i]
                Py_XDECREF(e.encoded)
                Py_XDECREF(e.asap)
                PyMem_Free(e)
                self._tkeys[i] = 0
        self._n = 0

    cdef int _clear(self) except -1:
        self._free_entries()
        PyMem_Free(self._tkeys)
        PyMem_Free(self._tvals)
        self._tkeys = NULL
        self._tvals = NULL
        self._tcap = 0
        PyMem_Free(self._heap)
        self._heap = NULL
        self._hn = 0
        self._hcap = 0
        self._proot = NULL
        self._last_home = NULL
        self._pools = {}
        self._homes = {}
        self._assocs = {}
        self._rare = {}
        return 0

    cdef inline int _enter(self) except -1:
        if self._busy:
            raise RuntimeError("the handlespace was called from code it was running "
                               "(a finalizer, __eq__, __hash__ or similar); not allowed")
        self._busy = True
        return 0

    # ---- settings ----------------------------------------------------------

    @property
    def own_id(self):
        return self._own_id

    @own_id.setter
    def own_id(self, value):
        self._own_id = value

    @property
    def max_increment(self):
        return self._o_inc

    @max_increment.setter
    def max_increment(self, value):
        self._max_inc = _setting_c(value)
        self._o_inc = value

    @property
    def max_bad_pe_reports(self):
        return self._o_bad

    @max_bad_pe_reports.setter
    def max_bad_pe_reports(self, value):
        self._max_bad = _setting_c(value)
        self._o_bad = value

    @property
    def max_handle_length(self):
        return self._o_hlen

    @max_handle_length.setter
    def max_handle_length(self, value):
        self._max_hlen = _setting_c(value)
        self._o_hlen = value

    @property
    def max_pools(self):
        return self._o_pools

    @max_pools.setter
    def max_pools(self, value):
        self._max_pools = _setting_c(value)
        self._o_pools = value

    @property
    def max_elements(self):
        return self._o_elements

    @max_elements.setter
    def max_elements(self, value):
        self._max_elements = _setting_c(value)
        self._o_elements = value

    # ---- identifier table --------------------------------------------------

    cdef int _table_init(self, size_t cap) except -1:
        cdef uint32_t* keys = <uint32_t*>PyMem_Malloc(cap * sizeof(uint32_t))
        cdef Entry** vals = <Entry**>PyMem_Malloc(cap * sizeof(Entry*))
        cdef int bits = 0
        if keys == NULL or vals == NULL:
            PyMem_Free(keys)
            PyMem_Free(vals)
            raise MemoryError()
        memset(keys, 0, cap * sizeof(uint32_t))
        while (<size_t>1 << bits) < cap:
            bits += 1
        self._tkeys = keys
        self._tvals = vals
        self._tcap = cap
        self._tshift = 64 - bits
        return 0

    cdef inline size_t _slot(self, uint32_t ident) noexcept nogil:
        return <size_t>((<uint64_t>ident * 0x9E3779B97F4A7C15ULL) >> self._tshift)

    cdef inline Entry* _lookup(self, uint32_t ident) noexcept nogil:
        cdef size_t mask = self._tcap - 1
        cdef size_t i = self._slot(ident)
        cdef uint32_t k
        while True:
            k = self._tkeys[i]
            if k == ident:
                return self._tvals[i]
            if k == 0:
                return NULL
            i = (i + 1) & mask

    cdef int _table_resize(self, size_t cap) except -1:
        cdef uint32_t* okeys = self._tkeys
        cdef Entry** ovals = self._tvals
        cdef size_t ocap = self._tcap
        cdef size_t i, j, mask
        self._tkeys = NULL
        self._tvals = NULL
        try:
            self._table_init(cap)
        except MemoryError:
            self._tkeys = okeys
            self._tvals = ovals
            self._tcap = ocap
            raise
        mask = cap - 1
        for i in range(ocap):
            if okeys[i] != 0:
                j = self._slot(okeys[i])
                while self._tkeys[j] != 0:
                    j = (j + 1) & mask
                self._tkeys[j] = okeys[i]
                self._tvals[j] = ovals[i]
        PyMem_Free(okeys)
        PyMem_Free(ovals)
        return 0

    cdef inline int _table_reserve(self) except -1:
        if <size_t>(self._n + 1) * 2 > self._tcap:
            self._table_resize(self._tcap * 2)
        return 0

    cdef void _table_insert(self, Entry* e) noexcept nogil:
        cdef size_t mask = self._tcap - 1
        cdef size_t i = self._slot(e.identifier)
        while self._tkeys[i] != 0:
            i = (i + 1) & mask
        self._tkeys[i] = e.identifier
        self._tvals[i] = e

    cdef void _table_delete(self, uint32_t ident) noexcept nogil:
        cdef size_t mask = self._tcap - 1
        cdef size_t i = self._slot(ident)
        cdef size_t j, k
        while self._tkeys[i] != ident:
            if self._tkeys[i] == 0:
                return
            i = (i + 1) & mask
        j = i
        while True:
            j = (j + 1) & mask
            if self._tkeys[j] == 0:
                break
            k = self._slot(self._tkeys[j])
            # move j into the hole at i unless its home slot lies cyclically in (i, j]
            if (j > i and (k <= i or k > j)) or (j < i and (k <= i and k > j)):
                self._tkeys[i] = self._tkeys[j]
                self._tvals[i] = self._tvals[j]
                i = j
        self._tkeys[i] = 0

    cdef void _table_maybe_shrink(self) noexcept:
        if self._tcap > 64 and <size_t>self._n * 8 < self._tcap:
            try:
                self._table_resize(self._tcap // 2)
            except MemoryError:
                pass

    # ---- timers --------------------------------------------------------------

    cdef int _heap_reserve(self) except -1:
        cdef size_t cap
        cdef HeapItem* items
        if self._hn < self._hcap:
            return 0
        cap = self._hcap * 2 if self._hcap else 64
        items = <HeapItem*>PyMem_Realloc(self._heap, cap * sizeof(HeapItem))
        if items == NULL:
            raise MemoryError()
        self._heap = items
        self._hcap = cap
        return 0

    cdef void _heap_maybe_shrink(self) noexcept:
        cdef HeapItem* items
        if self._hcap > 64 and self._hn * 4 < self._hcap:
            items = <HeapItem*>PyMem_Realloc(self._heap, (self._hcap // 2) * sizeof(HeapItem))
            if items != NULL:
                self._heap = items
                self._hcap //= 2

    cdef inline void _heap_place(self, size_t i, HeapItem* it) noexcept nogil:
        self._heap[i] = it[0]
        it.e.heap_idx = <uint32_t>i

    cdef void _sift_up(self, size_t i) noexcept nogil:
        cdef HeapItem it = self._heap[i]
        cdef size_t p
        while i > 0:
            p = (i - 1) >> 1
            if not _hlt(&it, &self._heap[p]):
                break
            self._heap_place(i, &self._heap[p])
            i = p
        self._heap_place(i, &it)

    cdef void _sift_down(self, size_t i) noexcept nogil:
        cdef HeapItem it = self._heap[i]
        cdef size_t n = self._hn
        cdef size_t c
        while True:
            c = 2 * i + 1
            if c >= n:
                break
            if c + 1 < n and _hlt(&self._heap[c + 1], &self._heap[c]):
                c += 1
            if not _hlt(&self._heap[c], &it):
                break
            self._heap_place(i, &self._heap[c])
            i = c
        self._heap_place(i, &it)

    cdef void _timer_clear(self, Entry* e) noexcept nogil:
        cdef size_t i
        if e.timer == 0:
            return
        i = e.heap_idx
        e.timer = 0
        e.heap_idx = HEAP_NONE
        self._hn -= 1
        if i < self._hn:
            self._heap[i] = self._heap[self._hn]
            self._heap[i].e.heap_idx = <uint32_t>i
            if i > 0 and _hlt(&self._heap[i], &self._heap[(i - 1) >> 1]):
                self._sift_up(i)
            else:
                self._sift_down(i)

    cdef void _timer_set(self, Entry* e, int kind, double deadline) noexcept nogil:
        """Needs _heap_reserve() first when e has no timer."""
        cdef size_t i
        cdef double old
        if kind == 0:
            self._timer_clear(e)
            return
        e.timer = <uint8_t>kind
        if e.heap_idx != HEAP_NONE:
            i = e.heap_idx
            old = self._heap[i].deadline
            self._heap[i].deadline = deadline
            if deadline < old:
                self._sift_up(i)
            elif deadline > old:
                self._sift_down(i)
            elif deadline != deadline or old != old:
                self._sift_up(e.heap_idx)
                self._sift_down(e.heap_idx)
            return
        i = self._hn
        self._hn += 1
        self._heap[i].deadline = deadline
        self._heap[i].pool = e.pool
        self._heap[i].e = e
        self._heap[i].ident = e.identifier
        e.heap_idx = <uint32_t>i
        self._sift_up(i)

    # ---- homes, associations -------------------------------------------------

    cdef HomeS* _home_for(self, uint32_t home) except NULL:
        """The home record of a registrar ID (created and filed if new)."""
        cdef HomeS* hs = self._last_home
        cdef PyObject* o
        cdef _Home h
        if hs != NULL and hs.home == home:
            return hs
        key = PyLong_FromUnsignedLong(home)
        o = PyDict_GetItem(self._homes, key)
        if o != NULL:
            hs = &(<_Home>o).s
        else:
            h = _Home.__new__(_Home)
            h.key = key
            h.s.home = home
            h.s.sum = 0
            h.s.count = 0
            h.s.head = NULL
            h.s.obj = <PyObject*>h
            h.s.key = <PyObject*>key
            self._homes[key] = h
            hs = &h.s
        self._last_home = hs
        return hs

    cdef inline void _home_link(self, Entry* e, HomeS* hs) noexcept nogil:
        e.hs = hs
        e.hprev = NULL
        e.hnext = hs.head
        if hs.head != NULL:
            hs.head.hprev = e
        hs.head = e
        hs.count += 1
        hs.sum += e.pool.hsum + (e.identifier >> 16) + (e.identifier & 0xFFFF)

    cdef inline void _home_unlink(self, Entry* e) noexcept nogil:
        """Unlink; the home record is left in place even when empty (see _home_gc)."""
        cdef HomeS* hs = e.hs
        if e.hprev != NULL:
            e.hprev.hnext = e.hnext
        else:
            hs.head = e.hnext
        if e.hnext != NULL:
            e.hnext.hprev = e.hprev
        hs.count -= 1
        hs.sum -= e.pool.hsum + (e.identifier >> 16) + (e.identifier & 0xFFFF)
        e.hs = NULL
        e.hprev = NULL
        e.hnext = NULL

    cdef void _home_gc(self, HomeS* hs) noexcept:
        """Drop an empty home record."""
        if hs.count != 0:
            return
        if self._last_home == hs:
            self._last_home = NULL
        try:
            PyDict_DelItem(self._homes, <object>hs.key)
        except BaseException:
            pass

    cdef AssocS* _assoc_for(self, object assoc) except NULL:
        """The association record (created and filed if new) with room for one more."""
        cdef PyObject* o = PyDict_GetItemWithError(self._assocs, assoc)
        cdef _Assoc a
        cdef AssocS* s
        cdef Entry** m
        cdef Py_ssize_t cap
        if o != NULL:
            s = &(<_Assoc>o).s
        else:
            a = _Assoc.__new__(_Assoc)
            a.key = assoc
            a.s.count = 0
            a.s.cap = 0
            a.s.members = NULL
            a.s.key = <PyObject*>assoc
            self._assocs[assoc] = a
            s = &a.s
        if s.count == s.cap:
            cap = s.cap * 2 if s.cap else 1
            m = <Entry**>PyMem_Realloc(s.members, cap * sizeof(Entry*))
            if m == NULL:
                self._assoc_gc(s)
                raise MemoryError()
            s.members = m
            s.cap = cap
        return s

    cdef inline void _assoc_link(self, Entry* e, AssocS* a) noexcept nogil:
        """Needs the room _assoc_for() made."""
        e.assoc = a
        e.aidx = <uint32_t>a.count
        a.members[a.count] = e
        a.count += 1

    cdef void _assoc_gc(self, AssocS* a) noexcept:
        """Drop an empty association record."""
        if a.count != 0:
            return
        try:
            PyDict_DelItem(self._assocs, <object>a.key)
        except BaseException:
            pass

    cdef AssocS* _assoc_unlink(self, Entry* e) noexcept nogil:
        """Take e out of its association; the record when it is left empty
        (the caller drops it with _assoc_gc once its own state is whole)."""
        cdef AssocS* a = e.assoc
        cdef Entry* last
        if a == NULL:
            return NULL
        a.count -= 1
        last = a.members[a.count]
        a.members[e.aidx] = last
        last.aidx = e.aidx
        e.assoc = NULL
        e.aidx = 0
        return a if a.count == 0 else NULL

    # ---- pools -------------------------------------------------------------------

    cdef _Pool _new_pool(self, bytes handle, int pol, uint32_t ptype, int kidx, long long use):
        cdef _Pool pool = _Pool.__new__(_Pool)
        cdef PoolS* s = &pool.s
        memset(s, 0, sizeof(PoolS))
        Py_INCREF(handle)
        s.handle = <PyObject*>handle
        s.use = <int32_t>use
        s.hsum = _handle_sum(rsp_bdata(s.handle), rsp_bsize(s.handle))
        s.pol = <uint8_t>pol
        s.kidx = <uint8_t>kidx
        s.engine_b = _PT_ENGINE_B[pol]
        s.default_inc = <uint8_t>_PT_DEFAULT_INC[pol]
        s.prio = <uint32_t>(_splitmix(&self._prio_state) >> 32)
        return pool

    cdef inline PoolS* _pool_of(self, object handle) except? NULL:
        """The pool filed under handle (dict semantics), or NULL."""
        cdef PyObject* o = PyDict_GetItemWithError(self._pools, handle)
        if o == NULL:
            return NULL
        return &(<_Pool>o).s

    # ---- finding entries -----------------------------------------------------------

    cdef int _find(self, object pool_handle, object identifier, Entry** out) except -1:
        """1 and the entry filed under (pool_handle, identifier), else 0."""
        cdef long long v
        cdef Entry* e
        cdef PoolS* p
        out[0] = NULL
        if rsp_as_ll(identifier, &v) and PyLong_CheckExact(identifier):
            if v <= 0 or v > LM32:
                return 0
        else:
            h = hash(identifier)
            if not (0 < h <= LM32) or not (identifier == h):
                return 0
            v = h
        e = self._lookup(<uint32_t>v)
        if e == NULL:
            return 0
        p = e.pool
        if type(pool_handle) is bytes:
            if (PyBytes_GET_SIZE(pool_handle) != _hlen(p)
                    or memcmp(PyBytes_AS_STRING(pool_handle), _hdata(p), _hlen(p)) != 0):
                return 0
        elif <object>p.handle != pool_handle:
            return 0
        out[0] = e
        return 1

    # ---- snapshots -------------------------------------------------------------------

    cdef PoolElementEntry _snap(self, Entry* e):
        cdef PoolElementEntry s = PoolElementEntry.__new__(PoolElementEntry)
        cdef _Rare rare
        s._handle = <object>e.pool.handle
        s._encoded = <object>e.encoded
        s._ident = e.identifier
        s._home = e.home
        s._life = e.life
        s._pol_off = e.pol_off
        s._seq = e.seq
        s._round = e.k1 if e.pool.pol == P_WRR else 0
        s._virtual = e.virtual_counter
        s._deg = e.degradation
        s._selected = e.selection_counter
        s._unreach = e.unreach
        s._timer = e.timer
        if e.timer != 0:
            s._deadline = self._heap[e.heap_idx].deadline
        s._lu = e.last_update
        s._lukind = 1 if e.flags & F_LU_INT else 0
        if e.asap != NULL:
            s._asap = <object>e.asap
            s._akind = 1
        if e.assoc != NULL:
            s._assoc = <object>e.assoc.key
        if e.flags & F_RARE:
            rare = self._rare[PyLong_FromUnsignedLong(e.identifier)]
            if rare.user is not None:
                s._user = rare.user
            if rare.has_asap:
                s._asap = rare.asap
                s._akind = 2
            if rare.has_lu:
                s._lu_obj = rare.last_update
                s._lukind = 2
        return s

    # ---- removal -----------------------------------------------------------------------

    cdef object _remove(self, Entry* e, bint snapshot):
        """Unfile and free e; its snapshot when asked.  Whatever can fail comes
        first, and Python objects are let go only once the C state is whole
        again (their finalizers may run)."""
        cdef PoolS* p = e.pool
        cdef HomeS* hs
        cdef AssocS* dead_assoc
        cdef bint pool_gone = False
        snap = self._snap(e) if snapshot else None
        rare_key = PyLong_FromUnsignedLong(e.identifier) if e.flags & F_RARE else None
        self._timer_clear(e)
        _sel_remove(p, e)
        if p.engine_b and e.w == 0:
            p.nzero -= 1
        _ids_remove(p, e)
        self._table_delete(e.identifier)
        hs = e.hs
        self._home_unlink(e)
        self._home_gc(hs)
        dead_assoc = self._assoc_unlink(e)
        p.count -= 1
        self._n -= 1
        enc = <object>e.encoded        # released when this function returns
        Py_DECREF(enc)
        asap = None
        if e.asap != NULL:
            asap = <object>e.asap
            Py_DECREF(asap)
        PyMem_Free(e)
        if p.count == 0:
            self._proot = _ptree_remove(self._proot, p)
            pool_gone = True
        self._table_maybe_shrink()
        self._heap_maybe_shrink()
        # the C state is consistent again
        if pool_gone:
            handle = <object>p.handle
            PyDict_DelItem(self._pools, handle)   # frees p
        if rare_key is not None:
            self._rare.pop(rare_key, None)
        if dead_assoc != NULL:
            self._assoc_gc(dead_assoc)
        return snap

    # ---- registration ------------------------------------------------------------------

    def register(self, pool_handle, pool_element, now, *, home_registrar=None,
                 association=None, timer=TIMER_EXPIRY, deadline=None):
        """Add a pool element or update an existing one (same handle and
        identifier).  Returns True for a new element."""
        cdef Py_ssize_t hlen
        cdef long long ident = 0, life = 0, home = 0, port = 0, pt = 0, use = 0, lv = 0
        cdef int kidx, pol = -1, tk, canon = 1, i
        cdef bint fast = True, generic_policy = False, user_override = False, new
        cdef bint ident_ok = False
        cdef PyObject* o
        cdef Py_ssize_t nvalues, tlen, plen, total
        cdef Entry* e = NULL
        cdef Entry* existing = NULL
        cdef PoolS* p = NULL
        cdef HomeS* hs = NULL
        cdef HomeS* old_hs
        cdef AssocS* na = NULL
        cdef AssocS* dead_assoc = NULL
        cdef _Pool pool
        cdef unsigned char tbuf[400]
        cdef unsigned char pbuf[280]
        cdef unsigned char ebuf[700]
        cdef unsigned char* q
        cdef uint64_t old_k1 = 0
        cdef uint32_t old_virtual = 0, old_w = 0
        cdef const unsigned char* eb
        cdef double dl = 0.0, lu = 0.0
        cdef uint8_t luflag = 0
        cdef uint32_t nv, w
        cdef _Rare rare = None
        self._enter()
        try:

            # 1. types
            if type(pool_handle) is not bytes:
                raise TypeError("pool_handle must be bytes")
            if type(pool_element) is not _PE:
                raise TypeError("pool_element must be a rserpool.wire.PoolElement")
            # 2. handle
            hlen = PyBytes_GET_SIZE(pool_handle)
            if hlen <= 0 or hlen > self._max_hlen:
                raise InvalidPoolHandleError(
                    f"pool handle of {hlen} bytes (1..{self._o_hlen})")
            # 3. values
            ident_o = rsp_field_get(&F_PE_ID, pool_element)
            user = rsp_field_get(&F_PE_USER, pool_element)
            if rsp_as_ll(ident_o, &ident):
                if ident == 0:
                    raise InvalidValueError("PE identifier 0 is invalid")
                if ident < 0 or ident > LM32:
                    fast = False
                else:
                    ident_ok = True
            else:
                if ident_o == 0:
                    raise InvalidValueError("PE identifier 0 is invalid")
                fast = False
            life_o = rsp_field_get(&F_PE_LIFE, pool_element)
            if rsp_as_ll(life_o, &life):
                if life < 0:
                    raise InvalidValueError("negative registration life")
                if life > 0x7FFFFFFF:
                    fast = False
            else:
                if life_o < 0:
                    raise InvalidValueError("negative registration life")
                fast = False
            kind = type(user)
            kidx = -1
            for i in range(5):
                if <PyObject*>kind == _KIND[i]:
                    kidx = i
                    break
            if kidx < 0:
                raise InvalidValueError("the user transport is not a transport parameter")
            port_o = rsp_field_get(&F_T_PORT[kidx], user)
            if rsp_as_ll(port_o, &port):
                if port == 0:
                    raise InvalidValueError("user transport port 0 is invalid")
            elif port_o == 0:
                raise InvalidValueError("user transport port 0 is invalid")
            home_o = rsp_field_get(&F_PE_HOME, pool_element) if home_registrar is None else home_registrar
            if rsp_as_ll(home_o, &home):
                if home < 0 or home > LM32:
                    raise InvalidValueError("home registrar ID out of range")
            else:
                if not (0 <= home_o <= LM32):
                    raise InvalidValueError("home registrar ID out of range")
                fast = False
            # 4. policy
            policy = rsp_field_get(&F_PE_POLICY, pool_element)
            values = None
            if type(policy) is _PP:
                pt_o = rsp_field_get(&F_PP_TYPE, policy)
                values = rsp_field_get(&F_PP_VALUES, policy)
                if not rsp_as_ll(pt_o, &pt) or type(values) is not tuple:
                    generic_policy = True
            else:
                generic_policy = True
            if not generic_policy:
                pol = _policy_index(pt)
                if pol < 0:
                    raise UnsupportedPolicyError(f"policy 0x{int(pt_o):08x} is not supported")
                nvalues = PyTuple_GET_SIZE(values)
                if nvalues < _PT_NVAL[pol]:
                    raise UnsupportedPolicyError(
                        f"policy 0x{<uint32_t>pt:08x} needs {_PT_NVAL[pol]} values")
            else:
                # not a PoolPolicy of the codec: the twin's checks, then the codec refuses it
                fast = False
                pt_o = policy.policy_type
                names = POLICY_VALUE_NAMES.get(pt_o)
                if names is None:
                    raise UnsupportedPolicyError(f"policy 0x{int(pt_o):08x} is not supported")
                if len(policy.values) < len(names):
                    raise UnsupportedPolicyError(f"policy 0x{int(pt_o):08x} needs {len(names)} values")
            # timer kind
            if rsp_as_ll(timer, &lv) and PyLong_CheckExact(timer):
                if lv < 0 or lv > 3:
                    raise ValueError(f"unknown timer kind {timer!r}")
                tk = <int>lv
            else:
                tk = -1
                for i in range(4):
                    if timer == i:
                        tk = i
                        break
                if tk < 0:
                    raise ValueError(f"unknown timer kind {timer!r}")
            # 5. uniqueness
            if ident_ok:
                existing = self._lookup(<uint32_t>ident)
                if existing != NULL:
                    p = existing.pool
                    if _hlen(p) != hlen or memcmp(_hdata(p), PyBytes_AS_STRING(pool_handle), hlen) != 0:
                        raise NonUniqueIdentifierError(
                            f"PE 0x{ident:08x} is registered in pool {<object>p.handle!r}")
            # 6. consistency with the pool
            o = PyDict_GetItem(self._pools, pool_handle)
            if o != NULL:
                p = &(<_Pool>o).s
                if generic_policy:
                    if _policy_obj(_PT_CODE[p.pol]) != pt_o:
                        raise PolicyInconsistentError(
                            f"pool uses policy 0x{_PT_CODE[p.pol]:08x}, not {pt_o!r}")
                elif _PT_CODE[p.pol] != pt:
                    raise PolicyInconsistentError(
                        f"pool uses policy 0x{_PT_CODE[p.pol]:08x}, not 0x{<uint32_t>pt:08x}")
                if p.kidx != kidx:
                    raise TransportInconsistentError(
                        f"pool uses {_KINDS[p.kidx].__name__}, not {kind.__name__}")
                if kidx <= 1:
                    use_o = rsp_field_get(&F_T_USE[kidx], user)
                    if rsp_as_ll(use_o, &use):
                        if use != p.use:
                            raise DataControlInconsistentError(
                                f"pool uses transport use {p.use}, not {use}")
                    elif int(use_o) != p.use:
                        raise DataControlInconsistentError(
                            f"pool uses transport use {p.use}, not {use_o}")
                elif p.use != 0:
                    raise DataControlInconsistentError(f"pool uses transport use {p.use}, not 0")
            else:
                p = NULL
            # 7. capacity
            if p == NULL and <long long>len(self._pools) >= self._max_pools:
                raise ResourceLimitError(f"pool limit of {self._o_pools} reached")
            if existing == NULL and <long long>self._n >= self._max_elements:
                raise ResourceLimitError(f"element limit of {self._o_elements} reached")

            # the encoding
            enc = None
            if fast:
                tlen = _enc_transport(user, kidx, tbuf, &canon)
                if tlen >= 0:
                    plen = _enc_policy(<uint32_t>pt, values, pbuf)
                    if plen >= 0:
                        total = 16 + tlen + plen
                        q = ebuf
                        _put16(q, 0x000A)
                        _put16(q + 2, <unsigned int>total)
                        _put32(q + 4, <uint32_t>ident)
                        _put32(q + 8, <uint32_t>home)
                        _put32(q + 12, <uint32_t>life)
                        memcpy(q + 16, tbuf, tlen)
                        memcpy(q + 16 + tlen, pbuf, plen)
                        if (existing != NULL and rsp_bsize(existing.encoded) == total
                                and memcmp(rsp_bdata(existing.encoded), ebuf, total) == 0):
                            enc = <object>existing.encoded      # unchanged: no new object
                        else:
                            enc = PyBytes_FromStringAndSize(<char*>ebuf, total)
                        if not canon:
                            user_override = True
            if enc is None:
                enc = _encode_parameter(_PE(ident_o, home_o, life_o, user, policy, None))
                if type(enc) is not bytes:
                    enc = bytes(enc)
                user_override = True
                if not ident_ok:
                    # the codec accepted an identifier the checks above could not read
                    ident = _get32(<const unsigned char*>PyBytes_AS_STRING(enc) + 4)
                    existing = self._lookup(<uint32_t>ident)
                    if existing != NULL and existing.pool != p:
                        raise NonUniqueIdentifierError(f"PE 0x{ident:08x} is registered elsewhere")
            eb = <const unsigned char*>PyBytes_AS_STRING(enc)
            tlen = _get16(eb + 18)
            tlen = (tlen + 3) & ~3
            plen = PyBytes_GET_SIZE(enc) - 16 - tlen
            if pol < 0:
                pol = _policy_index(_get32(eb + 16 + tlen + 4))
            # the ASAP transport
            asap_o = rsp_field_get(&F_PE_ASAP, pool_element)
            asap_b = None
            if asap_o is not None:
                if asap_o is self._asap_obj:
                    asap_b = self._asap_enc
                else:
                    asap_b = _asap_bytes(asap_o)
                    if asap_b is not None:
                        self._asap_obj = asap_o
                        self._asap_enc = asap_b
                if asap_b is None:
                    rare = _Rare.__new__(_Rare)
                    rare.asap = asap_o
                    rare.has_asap = True
            if user_override:
                if rare is None:
                    rare = _Rare.__new__(_Rare)
                rare.user = user
            # times
            if tk != 0:
                if deadline is None:
                    if PyFloat_CheckExact(now):
                        dl = PyFloat_AS_DOUBLE(now) + <double>life / 1000.0
                    elif PyLong_CheckExact(now):
                        dl = PyLong_AsDouble(now) + <double>life / 1000.0
                    else:
                        dl = PyFloat_AS_DOUBLE(PyNumber_Float(now + life_o / 1000.0))
                else:
                    dl = PyFloat_AS_DOUBLE(PyNumber_Float(deadline))
            if PyFloat_CheckExact(now):
                lu = PyFloat_AS_DOUBLE(now)
            elif PyLong_CheckExact(now) and rsp_as_ll(now, &lv) and -(1LL << 53) <= lv <= (1LL << 53):
                lu = <double>lv
                luflag = F_LU_INT
            else:
                if rare is None:
                    rare = _Rare.__new__(_Rare)
                rare.last_update = now
                rare.has_lu = True

            # everything that can fail, before the first change (a failure here
            # drops what it made: records that stayed empty, the new pool)
            if association is not None and (existing == NULL or existing.assoc == NULL
                                            or association != <object>existing.assoc.key):
                na = self._assoc_for(association)
            home = _get32(eb + 8)
            use = 0
            if existing == NULL and p == NULL and kidx <= 1:
                use_o = rsp_field_get(&F_T_USE[kidx], user)
                if not rsp_as_ll(use_o, &use):
                    use = int(use_o)
            try:
                hs = self._home_for(<uint32_t>home)
                if existing == NULL:
                    self._table_reserve()
                    e = <Entry*>PyMem_Malloc(sizeof(Entry))
                    if e == NULL:
                        raise MemoryError()
                    memset(e, 0, sizeof(Entry))
                if tk != 0 and (existing == NULL or existing.timer == 0):
                    self._heap_reserve()
                if existing == NULL and p == NULL:
                    pool = self._new_pool(pool_handle, pol, <uint32_t>_get32(eb + 16 + tlen + 4),
                                          kidx, use)
                    self._pools[pool_handle] = pool
                    p = &pool.s
                    self._proot = _ptree_insert(self._proot, p)
                if rare is not None:
                    self._rare[PyLong_FromUnsignedLong(<uint32_t>ident)] = rare
                elif existing != NULL and existing.flags & F_RARE:
                    del self._rare[PyLong_FromUnsignedLong(<uint32_t>ident)]
            except BaseException:
                if existing == NULL:
                    PyMem_Free(e)
                    if p != NULL and p.count == 0:
                        self._proot = _ptree_remove(self._proot, p)
                        self._pools.pop(pool_handle, None)
                if hs != NULL:
                    self._home_gc(hs)
                if na != NULL:
                    self._assoc_gc(na)
                raise

            # apply
            if existing == NULL:
                new = True
                e.pool = p
                e.identifier = <uint32_t>ident
                e.heap_idx = HEAP_NONE
                e.seq = p.global_seq
                p.global_seq += 1
                self._table_insert(e)
                _ids_insert(p, e)
                p.count += 1
                self._n += 1
                if na != NULL:
                    self._assoc_link(e, na)
            else:
                new = False
                e = existing
                old_k1 = e.k1
                old_virtual = e.virtual_counter
                old_w = e.w
                if na != NULL:
                    dead_assoc = self._assoc_unlink(e)
                    self._assoc_link(e, na)
            old_hs = e.hs
            if old_hs != hs:
                if old_hs != NULL:
                    self._home_unlink(e)
                self._home_link(e, hs)
                if old_hs != NULL:
                    self._home_gc(old_hs)
            e.home = <uint32_t>home
            e.life = <int32_t>_get32(eb + 12)
            Py_INCREF(enc)
            Py_XDECREF(e.encoded)
            e.encoded = <PyObject*>enc
            if asap_b is not None:
                Py_INCREF(asap_b)
            Py_XDECREF(e.asap)
            e.asap = <PyObject*>asap_b if asap_b is not None else NULL
            e.pol_off = <uint16_t>(16 + tlen)
            if p.pol == P_WRR:
                nv = _val(e, 0)
                if new:
                    e.k1 = p.sel.first.k1 if p.sel.first != NULL else 0
                    e.virtual_counter = nv
                elif nv < e.virtual_counter:
                    e.virtual_counter = nv
            e.degradation = 0
            e.unreach = 0
            e.flags = (F_RARE if rare is not None else 0) | luflag
            e.last_update = lu
            if new:
                if p.engine_b:
                    e.w = _weight(p.pol, e)
                    if e.w == 0:
                        p.nzero += 1
                _set_key(p.pol, e)
                _sel_insert(p, e)
            elif p.engine_b:
                # same seq; only a new weight moves anything (the sums)
                w = _weight(p.pol, e)
                if w != old_w:
                    _sel_remove(p, e)       # takes the old weight out of the sums
                    if old_w == 0:
                        p.nzero -= 1
                    e.w = w
                    if w == 0:
                        p.nzero += 1
                    _sel_insert(p, e)
            else:
                _set_key(p.pol, e)
                if e.k1 != old_k1 or e.virtual_counter != old_virtual:
                    _sel_remove(p, e)       # structural: the new key is not used
                    _sel_insert(p, e)
            self._timer_set(e, tk, dl)
            if dead_assoc != NULL and dead_assoc != na:
                self._assoc_gc(dead_assoc)
            return new
        finally:
            self._busy = False

    # ---- lookups ---------------------------------------------------------------------

    def deregister(self, pool_handle, identifier):
        """Remove a pool element; its snapshot, or None if it was not there."""
        cdef Entry* e
        self._enter()
        try:
            if not self._find(pool_handle, identifier, &e):
                return None
            return self._remove(e, True)
        finally:
            self._busy = False

    def get(self, pool_handle, identifier):
        cdef Entry* e
        self._enter()
        try:
            if not self._find(pool_handle, identifier, &e):
                return None
            return self._snap(e)
        finally:
            self._busy = False

    def __contains__(self, key):
        cdef Entry* e
        self._enter()
        try:
            return self._find(key[0], key[1], &e) == 1
        finally:
            self._busy = False

    def __len__(self):
        return self._n

    @property
    def pool_count(self):
        return len(self._pools)

    def pool_size(self, pool_handle):
        cdef PoolS* p
        self._enter()
        try:
            p = self._pool_of(pool_handle)
            return 0 if p == NULL else p.count
        finally:
            self._busy = False

    def pool_policy_type(self, pool_handle):
        cdef PoolS* p
        self._enter()
        try:
            p = self._pool_of(pool_handle)
            if p == NULL:
                return None
            return _policy_obj(_PT_CODE[p.pol])
        finally:
            self._busy = False

    # ---- selection ---------------------------------------------------------------------

    cdef inline Py_ssize_t _increment(self, PoolS* p) noexcept nogil:
        if self._max_inc != 0:
            return <Py_ssize_t>self._max_inc if self._max_inc > 0 else 0
        return p.default_inc

    cdef void _advance_a(self, PoolS* p, Entry* e) noexcept nogil:
        """Engine A: new seq, counter, hook, and back into place."""
        cdef Entry* nx
        e.seq = p.global_seq
        p.global_seq += 1
        e.selection_counter += 1
        if p.pol == P_WRR:
            if e.virtual_counter > 1:
                # the key shrinks: out and back in
                _tree_remove(&p.sel, 0, e, False, True)
                e.virtual_counter -= 1
                _tree_insert(&p.sel, 0, e, False, True)
                return
            e.k1 += 1
            e.virtual_counter = _val(e, 0)
        elif _PT_DEGRADING[p.pol]:
            e.degradation = <uint32_t>_sat(<uint64_t>e.degradation + _val(e, 1))
            _set_key(p.pol, e)
        # the key only grew: still in place when below its successor
        nx = _next(0, e)
        if nx == NULL or _lt(0, e, nx):
            return
        _tree_remove(&p.sel, 0, e, False, True)
        _tree_insert(&p.sel, 0, e, False, True)

    cdef Py_ssize_t _select_core(self, PoolS* p, Py_ssize_t n, Entry** out) noexcept nogil:
        """Select min(n, available) entries of p into out (state advanced)."""
        cdef Py_ssize_t N, K, i
        cdef Entry* e
        cdef uint64_t r, total
        K = self._increment(p)
        if not p.engine_b:
            N = n if n < p.count else p.count
            e = p.sel.first
            for i in range(N):
                out[i] = e
                e = _next(0, e)
            if K > N:
                K = N
            for i in range(K):
                self._advance_a(p, out[i])
            return N
        N = p.count - p.nzero
        if n < N:
            N = n
        for i in range(N):
            total = p.sel.total
            r = _xnext(self._rs) % total
            e = _pick(p.sel.root, r)
            if e == NULL:       # cannot happen while the weight sums are right
                N = i
                break
            _tree_remove(&p.sel, 0, e, True, True)
            out[i] = e
        for i in range(N):
            e = out[i]
            e.seq = p.global_seq
            p.global_seq += 1
            e.selection_counter += 1
            _tree_insert(&p.sel, 0, e, True, True)
        return N

    cdef inline Py_ssize_t _count_arg(self, PoolS* p, object count) except -2:
        """count as a positive C size (0: nothing to select)."""
        cdef long long v
        if PyLong_CheckExact(count) and rsp_as_ll(count, &v):
            if v <= 0:
                return 0
            return <Py_ssize_t>(v if v < p.count else p.count)
        if count <= 0:
            return 0
        v = _clamp_index(count)
        return <Py_ssize_t>(v if v < p.count else p.count)

    def select(self, pool_handle, count):
        """Select up to ``count`` PEs by the pool's policy (state advanced);
        their encoded Pool Element parameters in selection order."""
        cdef PoolS* p
        cdef Py_ssize_t n, N, i
        cdef Entry* small[8]
        cdef Entry** out
        cdef PyObject* x
        self._enter()
        try:
            p = self._pool_of(pool_handle)
            if p == NULL:
                return []
            n = self._count_arg(p, count)
            if n <= 0:
                return []
            if n <= 8:
                out = small
            else:
                out = <Entry**>PyMem_Malloc(n * sizeof(Entry*))
                if out == NULL:
                    raise MemoryError()
            N = self._select_core(p, n, out)
            result = PyList_New(N) if out == small else None
            if out != small:
                try:
                    result = PyList_New(N)
                except BaseException:
                    PyMem_Free(out)
                    raise
            for i in range(N):
                x = out[i].encoded
                Py_INCREF(<object>x)
                PyList_SET_ITEM(result, i, <object>x)
            if out != small:
                PyMem_Free(out)
            return result
        finally:
            self._busy = False

    def select_entries(self, pool_handle, count):
        """Like :meth:`select`, returning snapshots taken after the update."""
        cdef PoolS* p
        cdef Py_ssize_t n, N, i
        cdef Entry** out
        self._enter()
        try:
            p = self._pool_of(pool_handle)
            if p == NULL:
                return []
            n = self._count_arg(p, count)
            if n <= 0:
                return []
            out = <Entry**>PyMem_Malloc(n * sizeof(Entry*))
            if out == NULL:
                raise MemoryError()
            try:
                N = self._select_core(p, n, out)
                return [self._snap(out[i]) for i in range(N)]
            finally:
                PyMem_Free(out)
        finally:
            self._busy = False

    def resolve(self, pool_handle, count):
        """Select and build the whole Handle Resolution Response (the policy
        parameter of the first selected PE, then the PEs); None if nothing."""
        cdef PoolS* p
        cdef Py_ssize_t n, N, i, total, phl, pad, pol_len, k
        cdef Entry** out
        cdef unsigned char* q
        cdef Entry* e
        self._enter()
        try:
            p = self._pool_of(pool_handle)
            if p == NULL:
                return None
            n = self._count_arg(p, count)
            if n <= 0:
                return None
            out = <Entry**>PyMem_Malloc(n * sizeof(Entry*))
            if out == NULL:
                raise MemoryError()
            try:
                N = self._select_core(p, n, out)
                if N == 0:
                    return None
                phl = 4 + _hlen(p)
                pad = (-phl) & 3
                e = out[0]
                pol_len = PyBytes_GET_SIZE(<object>e.encoded) - e.pol_off
                total = 4 + phl + pad + pol_len
                for i in range(N):
                    total += PyBytes_GET_SIZE(<object>out[i].encoded)
                if total > 65535 or phl > 0xFFFF:
                    raise EncodeError(f"message of {total} bytes exceeds 65535")
                msg = PyBytes_FromStringAndSize(NULL, total)
                q = <unsigned char*>PyBytes_AS_STRING(msg)
                q[0] = 0x06
                q[1] = 0
                _put16(q + 2, <unsigned int>total)
                _put16(q + 4, 0x0009)
                _put16(q + 6, <unsigned int>phl)
                memcpy(q + 8, _hdata(p), _hlen(p))
                k = 8 + _hlen(p)
                if pad:
                    memset(q + k, 0, pad)
                    k += pad
                memcpy(q + k, PyBytes_AS_STRING(<object>e.encoded) + e.pol_off, pol_len)
                k += pol_len
                for i in range(N):
                    e = out[i]
                    memcpy(q + k, PyBytes_AS_STRING(<object>e.encoded),
                           PyBytes_GET_SIZE(<object>e.encoded))
                    k += PyBytes_GET_SIZE(<object>e.encoded)
                return msg
            finally:
                PyMem_Free(out)
        finally:
            self._busy = False

    # ---- unreachability, timers -----------------------------------------------------

    def report_unreachable(self, pool_handle, identifier):
        """Count one Endpoint Unreachable report; remove the PE (and return its
        snapshot) when the count reaches ``max_bad_pe_reports``."""
        cdef Entry* e
        self._enter()
        try:
            if not self._find(pool_handle, identifier, &e):
                return None
            e.unreach += 1
            if <long long>e.unreach >= self._max_bad:
                return self._remove(e, True)
            return None
        finally:
            self._busy = False

    def set_timer(self, pool_handle, identifier, kind, deadline=None):
        """(Re)arm or, with TIMER_NONE, clear a PE's timer."""
        cdef Entry* e
        cdef int tk = -1, i
        cdef long long lv
        cdef double dl = 0.0
        self._enter()
        try:
            if rsp_as_ll(kind, &lv) and PyLong_CheckExact(kind):
                if 0 <= lv <= 3:
                    tk = <int>lv
            else:
                for i in range(4):
                    if kind == i:
                        tk = i
                        break
            if tk < 0:
                raise ValueError(f"unknown timer kind {kind!r}")
            if tk != 0 and deadline is None:
                raise ValueError("a timer needs a deadline")
            if not self._find(pool_handle, identifier, &e):
                return False
            if tk != 0:
                dl = PyFloat_AS_DOUBLE(PyNumber_Float(deadline))
                if e.timer == 0:
                    self._heap_reserve()
            self._timer_set(e, tk, dl)
            return True
        finally:
            self._busy = False

    def next_deadline(self):
        if self._hn == 0:
            return None
        return PyFloat_FromDouble(self._heap[0].deadline)

    def expire(self, now):
        """Fire every timer due at ``now``: ``(pool_handle, identifier, kind)``
        in deadline order; TIMER_EXPIRY entries are removed."""
        cdef Entry* e
        cdef double t = 0.0
        cdef bint cfloat
        cdef int kind
        self._enter()
        try:
            cfloat = PyFloat_CheckExact(now)
            out = []
            if cfloat:
                t = PyFloat_AS_DOUBLE(now)
            while self._hn > 0:
                if cfloat:
                    if not (self._heap[0].deadline <= t):
                        break
                elif not (PyFloat_FromDouble(self._heap[0].deadline) <= now):
                    break
                e = self._heap[0].e
                kind = e.timer
                out.append((<object>e.pool.handle, PyLong_FromUnsignedLong(e.identifier), kind))
                if kind == 3:
                    self._remove(e, False)
                else:
                    self._timer_clear(e)
            return out
        finally:
            self._busy = False

    # ---- ownership and checksums --------------------------------------------------

    cdef Entry** _collect(self, Entry* head, Entry** members, Py_ssize_t n) except NULL:
        """The entries of a home list (head) or an association (members, n), in
        pool order, in a PyMem array of n (+1) pointers."""
        cdef Entry** arr = <Entry**>PyMem_Malloc((n + 1) * sizeof(Entry*))
        cdef Py_ssize_t i
        if arr == NULL:
            raise MemoryError()
        if members != NULL:
            memcpy(arr, members, n * sizeof(Entry*))
        else:
            i = 0
            while head != NULL and i < n:
                arr[i] = head
                i += 1
                head = head.hnext
        qsort(arr, n, sizeof(Entry*), _entry_order_cmp)
        return arr

    cdef list _keys_of(self, Entry* head, Entry** members, Py_ssize_t n):
        cdef Entry** arr = self._collect(head, members, n)
        cdef Py_ssize_t i
        try:
            return [(<object>arr[i].pool.handle, PyLong_FromUnsignedLong(arr[i].identifier))
                    for i in range(n)]
        finally:
            PyMem_Free(arr)

    def owned_by(self, registrar_id):
        cdef PyObject* o
        self._enter()
        try:
            o = PyDict_GetItemWithError(self._homes, registrar_id)
            if o == NULL:
                return []
            return self._keys_of((<_Home>o).s.head, NULL, (<_Home>o).s.count)
        finally:
            self._busy = False

    cdef int _rehome(self, Entry* e, uint32_t new_home, HomeS* hs) except -1:
        cdef Py_ssize_t n = PyBytes_GET_SIZE(<object>e.encoded)
        enc = PyBytes_FromStringAndSize(PyBytes_AS_STRING(<object>e.encoded), n)
        _put32(<unsigned char*>PyBytes_AS_STRING(enc) + 8, new_home)
        Py_INCREF(enc)
        Py_DECREF(<object>e.encoded)
        e.encoded = <PyObject*>enc
        e.home = new_home
        self._home_unlink(e)
        self._home_link(e, hs)
        return 0

    cdef uint32_t _home_arg(self, object new_home) except? 0xFFFFFFFF:
        cdef long long v
        if rsp_as_ll(new_home, &v):
            if v < 0 or v > LM32:
                raise InvalidValueError("home registrar ID out of range")
            return <uint32_t>v
        if not (0 <= new_home <= LM32):
            raise InvalidValueError("home registrar ID out of range")
        v = PyNumber_Index(new_home)
        return <uint32_t>v

    def rehome(self, pool_handle, identifier, new_home):
        cdef uint32_t h
        cdef Entry* e
        cdef HomeS* hs
        cdef HomeS* old
        self._enter()
        try:
            h = self._home_arg(new_home)
            if not self._find(pool_handle, identifier, &e):
                return False
            hs = self._home_for(h)
            old = e.hs
            try:
                self._rehome(e, h, hs)
            except BaseException:
                self._home_gc(hs)
                raise
            self._home_gc(old)
            return True
        finally:
            self._busy = False

    def takeover(self, old_home, new_home):
        """Re-home every PE of ``old_home`` to ``new_home``; the count."""
        cdef uint32_t h
        cdef PyObject* o
        cdef HomeS* src
        cdef HomeS* dst
        cdef Py_ssize_t n = 0
        self._enter()
        try:
            h = self._home_arg(new_home)
            if old_home == new_home:
                o = PyDict_GetItemWithError(self._homes, old_home)
                return 0 if o == NULL else (<_Home>o).s.count
            o = PyDict_GetItemWithError(self._homes, old_home)
            if o == NULL:
                return 0
            src = &(<_Home>o).s
            dst = self._home_for(h)
            if dst == src:
                return src.count
            try:
                while src.head != NULL:
                    self._rehome(src.head, h, dst)
                    n += 1
            finally:
                self._home_gc(dst)
                self._home_gc(src)
            return n
        finally:
            self._busy = False

    def checksum(self, registrar_id):
        cdef PyObject* o
        self._enter()
        try:
            o = PyDict_GetItemWithError(self._homes, registrar_id)
            return PyLong_FromUnsignedLong(_fold((<_Home>o).s.sum if o != NULL else 0))
        finally:
            self._busy = False

    def checksums(self):
        cdef _Home h
        self._enter()
        try:
            out = {}
            for key in sorted(self._homes):
                h = self._homes[key]
                out[key] = PyLong_FromUnsignedLong(_fold(h.s.sum))
            return out
        finally:
            self._busy = False

    # ---- associations ------------------------------------------------------------------

    def by_association(self, association):
        cdef PyObject* o
        self._enter()
        try:
            o = PyDict_GetItemWithError(self._assocs, association)
            if o == NULL:
                return []
            return self._keys_of(NULL, (<_Assoc>o).s.members, (<_Assoc>o).s.count)
        finally:
            self._busy = False

    def remove_association(self, association):
        cdef PyObject* o
        cdef Entry* e
        self._enter()
        try:
            o = PyDict_GetItemWithError(self._assocs, association)
            if o == NULL:
                return []
            out = []
            for handle, ident in self._keys_of(NULL, (<_Assoc>o).s.members, (<_Assoc>o).s.count):
                e = self._lookup(<uint32_t>ident)
                out.append(self._remove(e, True))
            return out
        finally:
            self._busy = False

    # ---- iteration -------------------------------------------------------------------------

    def pools(self):
        cdef PoolS* p
        self._enter()
        try:
            p = _ptree_first(self._proot)
            out = []
            while p != NULL:
                out.append(<object>p.handle)
                p = _ptree_next(self._proot, p)
            return out
        finally:
            self._busy = False

    def pool_elements(self, pool_handle):
        cdef PoolS* p
        cdef Entry* e
        self._enter()
        try:
            p = self._pool_of(pool_handle)
            if p == NULL:
                return []
            out = []
            e = _leftmost(1, p.ids)
            while e != NULL:
                out.append(self._snap(e))
                e = _next(1, e)
            return out
        finally:
            self._busy = False

    def page(self, after=None, limit=128, *, home=None):
        """Entries strictly after ``after`` in pool order (only those with
        ``home_registrar == home`` when given), at most ``limit``; the cursor
        for the next page, or None when nothing remains."""
        cdef Py_ssize_t lim
        cdef long long aid = -1, hv = 0
        cdef PoolS* p
        cdef PoolS* ap = NULL
        cdef Entry* e
        cdef bint more = False, hfilter = False, hgeneric = False, hnone = False
        cdef const char* ah = NULL
        cdef Py_ssize_t alen = 0
        self._enter()
        try:
            if limit < 1:
                raise ValueError("limit must be at least 1")
            if PyLong_Check(limit):
                lim = _clamp_index(limit)
            elif isinstance(limit, float) and (limit != limit or not limit.is_integer()):
                lim = 0x3FFFFFFFFFFFFFFFLL      # len(out) == limit is never true
            else:
                lim = _clamp_index(int(limit))
            if home is not None:
                hfilter = True
                if PyLong_Check(home):
                    if not rsp_as_ll(home, &hv) or hv < 0 or hv > LM32:
                        hnone = True
                else:
                    hgeneric = True
            out = []
            if after is None:
                p = _ptree_first(self._proot)
            else:
                hb = after[0]
                if type(hb) is not bytes:
                    if isinstance(hb, (bytearray, memoryview)):
                        hb = bytes(hb)
                    else:
                        raise TypeError("the cursor's pool handle must be bytes")
                ai = after[1]
                if rsp_as_ll(ai, &aid):
                    pass
                elif PyLong_Check(ai):
                    aid = -1 if ai < 0 else 0x100000000
                elif isinstance(ai, float):
                    if ai != ai:
                        aid = -1
                    elif ai >= 4294967296.0:
                        aid = 0x100000000
                    elif ai < 0:
                        aid = -1
                    else:
                        aid = <long long>ai
                else:
                    ai = PyNumber_Index(ai)
                    aid = -1 if ai < 0 else (0x100000000 if ai > LM32 else ai)
                if aid < -1:
                    aid = -1
                if aid > 0x100000000:
                    aid = 0x100000000
                ah = PyBytes_AS_STRING(hb)
                alen = PyBytes_GET_SIZE(hb)
                p = _ptree_lower(self._proot, ah, alen, False)
                if p != NULL and _pcmp(_hdata(p), _hlen(p), ah, alen) == 0:
                    ap = p
            if hnone:
                return out, None
            while p != NULL and not more:
                if p == ap:
                    e = _id_after(p.ids, aid)
                else:
                    e = _leftmost(1, p.ids)
                while e != NULL:
                    if hfilter:
                        if hgeneric:
                            if PyLong_FromUnsignedLong(e.home) != home:
                                e = _next(1, e)
                                continue
                        elif e.home != <uint32_t>hv:
                            e = _next(1, e)
                            continue
                    if len(out) == lim:
                        more = True
                        break
                    out.append(self._snap(e))
                    e = _next(1, e)
                p = _ptree_next(self._proot, p)
            if more:
                last = out[len(out) - 1]
                return out, (last.pool_handle, last.identifier)
            return out, None
        finally:
            self._busy = False

    # ---- statistics and self-check ----------------------------------------------------

    def statistics(self):
        """Counts, and ``memory_bytes``: the C memory of entries, identifier
        table and timer heap plus the encoded parameters the entries hold (an
        object shared by several entries counts in proportion).  O(n)."""
        cdef size_t i
        cdef Entry* e
        cdef double objs = 0.0
        cdef size_t cmem = <size_t>self._n * sizeof(Entry)
        cmem += self._tcap * (sizeof(uint32_t) + sizeof(Entry*))
        cmem += self._hcap * sizeof(HeapItem)
        getsizeof = _sys_getsizeof
        for i in range(self._tcap):
            if self._tkeys[i] != 0:
                e = self._tvals[i]
                objs += getsizeof(<object>e.encoded) / <double>_Py_REFCNT(e.encoded)
                if e.asap != NULL:
                    objs += getsizeof(<object>e.asap) / <double>_Py_REFCNT(e.asap)
        return {"pools": len(self._pools), "elements": self._n,
                "homes": len(self._homes), "associations": len(self._assocs),
                "timers": self._hn, "memory_bytes": int(cmem + objs)}

    cdef int _check_tree(self, PoolS* p, int t, list seqs) except -1:
        cdef Entry* root = p.sel.root if t == 0 else p.ids
        cdef Entry* e
        cdef Entry* prev = NULL
        cdef Py_ssize_t n = 0, nz = 0
        cdef uint64_t k1
        cdef uint32_t w
        cdef bint summed = t == 0 and p.engine_b
        if root != NULL and root.up[t] != NULL:
            raise AssertionError("tree root has a parent")
        if t == 0:
            if root == NULL and (p.sel.first != NULL or p.sel.last != NULL):
                raise AssertionError("empty tree with ends")
            if root != NULL:
                if _leftmost(0, root) != p.sel.first:
                    raise AssertionError("stale first entry")
                e = root
                while e.rc[0] != NULL:
                    e = e.rc[0]
                if e != p.sel.last:
                    raise AssertionError("stale last entry")
        e = _leftmost(t, root)
        while e != NULL:
            n += 1
            if n > p.count:
                raise AssertionError("tree longer than the pool")
            if e.pool != p:
                raise AssertionError("entry in the wrong pool")
            if prev != NULL and not _lt(t, prev, e):
                raise AssertionError("tree out of order")
            if e.lc[t] != NULL and (e.lc[t].up[t] != e or _prio(e.lc[t]) > _prio(e)):
                raise AssertionError("bad left link")
            if e.rc[t] != NULL and (e.rc[t].up[t] != e or _prio(e.rc[t]) > _prio(e)):
                raise AssertionError("bad right link")
            if e.up[t] == NULL and e != root:
                raise AssertionError("detached entry")
            if summed:
                if e.lsum != _subsum(0, e.lc[0]):
                    raise AssertionError("stale weight sum")
                w = _weight(p.pol, e)
                if w != e.w:
                    raise AssertionError("stale weight")
                if w == 0:
                    nz += 1
            if t == 0:
                if p.pol != P_WRR:
                    if e.virtual_counter != 0:
                        raise AssertionError("virtual counter outside WRR")
                    k1 = e.k1
                    _set_key(p.pol, e)
                    if k1 != e.k1:
                        raise AssertionError("stale selection key")
                    if not _PT_DEGRADING[p.pol] and e.degradation != 0:
                        raise AssertionError("degradation outside the degrading policies")
                if e.seq >= p.global_seq:
                    raise AssertionError("seq not below the pool's global seq")
                seqs.append(e.seq)
            prev = e
            e = _next(t, e)
        if n != p.count:
            raise AssertionError("tree size differs from the pool size")
        if summed and nz != p.nzero:
            raise AssertionError("zero-weight count differs")
        if summed and p.sel.total != _subsum(0, p.sel.root):
            raise AssertionError("stale weight total")
        return 0

    def check(self):
        """Verify every index against the entries; raise AssertionError."""
        cdef size_t i, cnt = 0
        cdef Entry* e
        cdef PoolS* p
        cdef PoolS* q
        cdef _Pool pool
        cdef _Home h
        cdef _Assoc a
        cdef uint32_t s
        cdef Py_ssize_t total = 0, npools = 0
        cdef const unsigned char* eb
        cdef Py_ssize_t tl
        cdef HeapItem* it
        cdef PyObject* o
        self._enter()
        try:
            # identifier table
            for i in range(self._tcap):
                if self._tkeys[i] != 0:
                    cnt += 1
                    e = self._tvals[i]
                    if e.identifier != self._tkeys[i] or self._lookup(e.identifier) != e:
                        raise AssertionError("identifier table out of step")
            if cnt != <size_t>self._n:
                raise AssertionError("identifier table size differs")
            # pools
            for handle, pool in self._pools.items():
                p = &pool.s
                if <object>p.handle != handle or p.count == 0:
                    raise AssertionError("empty or misfiled pool")
                seqs = []
                self._check_tree(p, 0, seqs)
                self._check_tree(p, 1, None)
                if len(set(seqs)) != p.count:
                    raise AssertionError("duplicate seq")
                total += p.count
            if total != self._n:
                raise AssertionError("pool sizes do not add up")
            p = _ptree_first(self._proot)
            q = NULL
            while p != NULL:
                npools += 1
                if q != NULL and not _plt(q, p):
                    raise AssertionError("pool order broken")
                o = PyDict_GetItem(self._pools, <object>p.handle)
                if o == NULL or &(<_Pool>o).s != p:
                    raise AssertionError("pool tree holds a stale pool")
                q = p
                p = _ptree_next(self._proot, p)
            if npools != len(self._pools):
                raise AssertionError("pool tree size differs")
            # entries: encodings, homes, associations, timers
            cnt = 0
            for i in range(self._tcap):
                if self._tkeys[i] == 0:
                    continue
                e = self._tvals[i]
                eb = <const unsigned char*>PyBytes_AS_STRING(<object>e.encoded)
                tl = (_get16(eb + 18) + 3) & ~3
                if (_get16(eb) != 0x000A or _get32(eb + 4) != e.identifier
                        or _get32(eb + 8) != e.home or <int32_t>_get32(eb + 12) != e.life
                        or e.pol_off != 16 + tl or _get32(eb + 16 + tl + 4) != _PT_CODE[e.pool.pol]
                        or _get16(eb + 2) != PyBytes_GET_SIZE(<object>e.encoded)):
                    raise AssertionError("stale encoding")
                if e.hs == NULL or e.hs.home != e.home:
                    raise AssertionError("entry filed under the wrong home")
                if (e.timer == 0) != (e.heap_idx == HEAP_NONE):
                    raise AssertionError("timer state")
                if e.timer != 0:
                    cnt += 1
                    if e.heap_idx >= self._hn or self._heap[e.heap_idx].e != e:
                        raise AssertionError("heap index")
                if (e.flags & F_RARE) != (PyLong_FromUnsignedLong(e.identifier) in self._rare):
                    raise AssertionError("rare record")
            if cnt != self._hn:
                raise AssertionError("timer count differs")
            for i in range(self._hn):
                it = &self._heap[i]
                if it.e.heap_idx != i or it.pool != it.e.pool or it.ident != it.e.identifier:
                    raise AssertionError("heap item out of step")
                if i > 0 and _hlt(it, &self._heap[(i - 1) >> 1]):
                    raise AssertionError("heap order broken")
            if len(self._rare) > self._n:
                raise AssertionError("rare records without entries")
            total = 0
            for key, h in self._homes.items():
                if h.s.count <= 0 or h.s.obj != <PyObject*>h or <object>h.s.key is not h.key:
                    raise AssertionError("empty home record")
                if key != h.s.home:
                    raise AssertionError("home record misfiled")
                s = 0
                cnt = 0
                e = h.s.head
                while e != NULL:
                    cnt += 1
                    if e.hs != &h.s or (e.hnext != NULL and e.hnext.hprev != e):
                        raise AssertionError("home list links")
                    s += e.pool.hsum + (e.identifier >> 16) + (e.identifier & 0xFFFF)
                    e = e.hnext
                if cnt != <size_t>h.s.count:
                    raise AssertionError("home count differs")
                if s != h.s.sum:
                    raise AssertionError("checksum sum differs from a recomputation")
                if s != <uint32_t>(sum([pe_checksum_sum(hh, ii) for hh, ii in self._keys_of(h.s.head, NULL, h.s.count)])
                                   & 0xFFFFFFFF):
                    raise AssertionError("checksum sum differs from pe_checksum_sum")
                total += cnt
            if total != self._n:
                raise AssertionError("home lists do not cover every entry")
            total = 0
            for key, a in self._assocs.items():
                if a.s.count <= 0 or a.s.count > a.s.cap or <object>a.s.key is not a.key:
                    raise AssertionError("empty association record")
                for i in range(<size_t>a.s.count):
                    e = a.s.members[i]
                    if e.assoc != &a.s or e.aidx != i or self._lookup(e.identifier) != e:
                        raise AssertionError("association members")
                total += a.s.count
            for i in range(self._tcap):
                if self._tkeys[i] != 0 and self._tvals[i].assoc != NULL:
                    total -= 1
            if total != 0:
                raise AssertionError("association lists do not match the entries")
        finally:
            self._busy = False
