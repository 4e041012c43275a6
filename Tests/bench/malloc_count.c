/* LD_PRELOAD malloc counter for `make bench`: counts allocation calls per thread and for the whole process.
 * - Per thread: the benchmark reads its own thread's count through dlsym("meterext_thread_allocations").
 * - Whole process (every thread): when MALLOC_COUNT_FILE names a file, the total is kept in that file (an 8-byte
 *   counter in a shared mapping), so `make bench` reads it from outside while the service runs. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static __thread uint64_t allocations;
static uint64_t local_total;
static uint64_t *total = &local_total;

uint64_t meterext_thread_allocations(void) { return allocations; }
uint64_t meterext_process_allocations(void) { return __atomic_load_n(total, __ATOMIC_RELAXED); }

__attribute__((constructor)) static void setup(void) {
    const char *path = getenv("MALLOC_COUNT_FILE");
    if (!path) return;
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || ftruncate(fd, sizeof(uint64_t)) != 0) return;
    void *p = mmap(NULL, sizeof(uint64_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p != MAP_FAILED) total = p;
}

static inline void count(void) {
    allocations++;
    __atomic_fetch_add(total, 1, __ATOMIC_RELAXED);
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
