/*
 * LD_PRELOAD shim for Debian 12's user-mode-linux (6.1) on hosts whose XSAVE
 * area is larger than UML expects (AVX-512, AMX: most current Xeons).
 *
 * The problem: UML saves and restores the FPU state of the host processes
 * that run guest code with ptrace(PTRACE_GETREGSET / PTRACE_SETREGSET,
 * NT_X86_XSTATE) and a fixed 832-byte buffer (legacy area + XSAVE header +
 * AVX).  GETREGSET with a short buffer just truncates, but the host kernel's
 * SETREGSET insists on a buffer of exactly the full user XSAVE size and fails
 * with EFAULT otherwise, so the first guest process dies with
 *
 *     userspace - ptrace set fp regs failed, errno = 14
 *     Kernel panic - not syncing: Attempted to kill init!
 *
 * The fix, without changing UML: wrap ptrace().  For NT_X86_XSTATE requests
 * with a buffer shorter than the host's XSAVE size, keep a full-size shadow
 * copy per UML buffer address (UML has one buffer per guest thread):
 *
 *   GETREGSET: read the full state into the shadow, hand UML its prefix;
 *   SETREGSET: lay UML's (possibly modified) prefix over the shadow and
 *              write the full state.
 *
 * So the components UML does not know about (AVX-512, AMX...) are saved and
 * restored per guest thread too, instead of leaking between threads.  Other
 * requests, and buffers that are already large enough, pass straight through.
 *
 * UML's tracing is single-threaded (one host thread issues every ptrace), so
 * no locking.  Build: cc -shared -fPIC -O2 -o xstate_shim.so xstate_shim.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <elf.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifndef NT_X86_XSTATE
#define NT_X86_XSTATE 0x202
#endif
/* <sys/ptrace.h> is not included: it declares ptrace() with an enum. */
#define PTRACE_GETREGSET 0x4204
#define PTRACE_SETREGSET 0x4205

typedef long (*ptrace_fn)(int, pid_t, void *, void *);

#define PROBE_SIZE (64 * 1024)      /* larger than any XSAVE area so far */
#define SLOTS 4096                  /* open-addressing table of shadows  */

struct shadow {
    void *key;                      /* UML's buffer address, NULL = free */
    unsigned char *state;           /* full_size bytes                   */
};

static ptrace_fn real_ptrace;
static size_t full_size;            /* 0 = not known yet                 */
static struct shadow table[SLOTS];
static int table_full_warned;

static ptrace_fn next_ptrace(void)
{
    if (!real_ptrace)
        real_ptrace = (ptrace_fn)dlsym(RTLD_NEXT, "ptrace");
    return real_ptrace;
}

/* The host's user XSAVE size: what GETREGSET fills when given room. */
static size_t host_xstate_size(pid_t pid)
{
    if (full_size)
        return full_size;
    unsigned char *probe = malloc(PROBE_SIZE);
    if (!probe)
        return 0;
    struct iovec iov = { probe, PROBE_SIZE };
    int saved = errno;
    if (next_ptrace()(PTRACE_GETREGSET, pid, (void *)NT_X86_XSTATE, &iov) == 0)
        full_size = iov.iov_len;
    errno = saved;
    free(probe);
    return full_size;
}

static size_t slot_of(void *key)
{
    uintptr_t h = (uintptr_t)key;
    h ^= h >> 17;
    h *= 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 20) % SLOTS;
}

/* The shadow for key, created (zeroed) if create != 0; NULL if none/full. */
static unsigned char *shadow_for(void *key, int create)
{
    size_t i = slot_of(key);
    for (size_t n = 0; n < SLOTS; n++, i = (i + 1) % SLOTS) {
        if (table[i].key == key)
            return table[i].state;
        if (table[i].key == NULL) {
            if (!create)
                return NULL;
            unsigned char *state = calloc(1, full_size);
            if (!state)
                return NULL;
            table[i].key = key;
            table[i].state = state;
            return state;
        }
    }
    table_full_warned = 1;
    return NULL;
}

static long xstate_get(pid_t pid, struct iovec *iov)
{
    unsigned char *state = shadow_for(iov->iov_base, 1);
    unsigned char *tmp = NULL;
    if (!state) {
        tmp = malloc(full_size);
        if (!tmp) {
            errno = ENOMEM;
            return -1;
        }
        state = tmp;
    }
    struct iovec full = { state, full_size };
    long rc = next_ptrace()(PTRACE_GETREGSET, pid, (void *)NT_X86_XSTATE, &full);
    if (rc == 0) {
        size_t n = iov->iov_len < full.iov_len ? iov->iov_len : full.iov_len;
        memcpy(iov->iov_base, state, n);
        iov->iov_len = n;
    }
    free(tmp);
    return rc;
}

static long xstate_set(pid_t pid, struct iovec *iov)
{
    unsigned char *state = shadow_for(iov->iov_base, 0);
    unsigned char *tmp = NULL;
    long rc;
    if (!state) {
        /* Never read through this buffer: start from the tracee's state. */
        tmp = malloc(full_size);
        if (!tmp) {
            errno = ENOMEM;
            return -1;
        }
        struct iovec cur = { tmp, full_size };
        rc = next_ptrace()(PTRACE_GETREGSET, pid, (void *)NT_X86_XSTATE, &cur);
        if (rc != 0) {
            free(tmp);
            return rc;
        }
        state = tmp;
    }
    memcpy(state, iov->iov_base, iov->iov_len);
    struct iovec full = { state, full_size };
    rc = next_ptrace()(PTRACE_SETREGSET, pid, (void *)NT_X86_XSTATE, &full);
    free(tmp);
    return rc;
}

long ptrace(int request, ...)
{
    va_list ap;
    va_start(ap, request);
    pid_t pid = va_arg(ap, pid_t);
    void *addr = va_arg(ap, void *);
    void *data = va_arg(ap, void *);
    va_end(ap);

    if ((request == PTRACE_GETREGSET || request == PTRACE_SETREGSET)
        && (uintptr_t)addr == NT_X86_XSTATE && data != NULL) {
        struct iovec *iov = data;
        size_t size = host_xstate_size(pid);
        if (size && iov->iov_len < size && iov->iov_base != NULL) {
            return request == PTRACE_GETREGSET ? xstate_get(pid, iov)
                                               : xstate_set(pid, iov);
        }
    }
    return next_ptrace()(request, pid, addr, data);
}
