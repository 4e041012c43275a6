/* LD_PRELOAD malloc counter for `make bench`: counts allocation calls per thread and for the whole process.
 * - Per thread: the benchmark reads its own thread's count through dlsym("meterext_thread_allocations").
 * - Whole process (every thread): when MALLOC_COUNT_FILE names a file, the total is kept in that file (an 8-byte
 *   counter in a shared mapping), so `make bench` reads it from outside while the service runs.
 * - Where (for finding allocation sites, not used by `make bench`): when MALLOC_COUNT_TRACE names a file, every
 *   allocation appends one line "<monotonic ns> <thread name> <return addresses...>" (glibc backtrace(), up to 24
 *   frames; allocations made while tracing are not traced). Tests/bench/alloc_sites.py turns the lines of a time
 *   window into counted call sites. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
#include <execinfo.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static __thread uint64_t allocations;
static uint64_t local_total;
static uint64_t *total = &local_total;
static int trace_fd = -1;
static __thread int in_trace;

uint64_t meterext_thread_allocations(void) { return allocations; }
uint64_t meterext_process_allocations(void) { return __atomic_load_n(total, __ATOMIC_RELAXED); }

__attribute__((constructor)) static void setup(void) {
    const char *path = getenv("MALLOC_COUNT_FILE");
    const char *trace = getenv("MALLOC_COUNT_TRACE");
    if (trace) {
        in_trace = 1;
        void *warm[2];
        backtrace(warm, 2);  /* loads libgcc_s now, not inside the first traced malloc */
        trace_fd = open(trace, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
        in_trace = 0;
    }
    if (!path) return;
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || ftruncate(fd, sizeof(uint64_t)) != 0) return;
    void *p = mmap(NULL, sizeof(uint64_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p != MAP_FAILED) total = p;
}

static void trace_site(void) {
    if (trace_fd < 0 || in_trace) return;
    in_trace = 1;
    void *frames[26];
    int n = backtrace(frames, 26);
    char line[26 * 20 + 64];
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    char name[17] = {0};
    prctl(PR_GET_NAME, name);
    for (char *c = name; *c; c++) if (*c == ' ') *c = '_';
    int len = snprintf(line, sizeof line, "%llu %s", (unsigned long long)ts.tv_sec * 1000000000ull + ts.tv_nsec, name);
    for (int i = 2; i < n && len < (int)sizeof line - 20; i++)  /* skip trace_site and the wrapper */
        len += snprintf(line + len, sizeof line - len, " %p", frames[i]);
    line[len++] = '\n';
    (void)!write(trace_fd, line, len);
    in_trace = 0;
}

static inline void count(void) {
    allocations++;
    __atomic_fetch_add(total, 1, __ATOMIC_RELAXED);
    if (__builtin_expect(trace_fd >= 0, 0)) trace_site();
}

void *malloc(size_t n) { count(); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { count(); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { count(); return __libc_realloc(p, n); }
void *memalign(size_t a, size_t n) { count(); return __libc_memalign(a, n); }
void *aligned_alloc(size_t a, size_t n) { count(); return __libc_memalign(a, n); }
int posix_memalign(void **out, size_t a, size_t n) {
    count();
    void *p = __libc_memalign(a, n);
    if (!p) return 12;
    *out = p;
    return 0;
}
