// See cplatform.h for why this file exists.
#define _GNU_SOURCE
#include "cplatform.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <linux/serial.h>

// MARK: - Serial ioctls

int meterext_serial_transmitter_empty(int fd, int *empty) {
    unsigned int lsr = 0;
    if (ioctl(fd, TIOCSERGETLSR, &lsr) < 0)
        return -1;
    *empty = (lsr & TIOCSER_TEMT) ? 1 : 0;
    return 0;
}

int meterext_serial_set_rts(int fd, int asserted) {
    int bits = TIOCM_RTS;
    return ioctl(fd, asserted ? TIOCMBIS : TIOCMBIC, &bits);
}

int meterext_serial_set_exclusive(int fd) { return ioctl(fd, TIOCEXCL); }

static void from_kernel(const struct serial_rs485 *k, struct meterext_rs485 *m) {
    m->enabled = (k->flags & SER_RS485_ENABLED) ? 1 : 0;
    m->rts_on_send = (k->flags & SER_RS485_RTS_ON_SEND) ? 1 : 0;
    m->delay_before_ms = k->delay_rts_before_send;
    m->delay_after_ms = k->delay_rts_after_send;
}

int meterext_serial_set_rs485(int fd, const struct meterext_rs485 *wanted, struct meterext_rs485 *applied) {
    struct serial_rs485 k;
    memset(&k, 0, sizeof k);
    if (wanted->enabled)
        k.flags |= SER_RS485_ENABLED;
    // RTS level while sending and the opposite level after: exactly one of the two, or drivers pick their own.
    k.flags |= wanted->rts_on_send ? SER_RS485_RTS_ON_SEND : SER_RS485_RTS_AFTER_SEND;
    k.delay_rts_before_send = wanted->delay_before_ms;
    k.delay_rts_after_send = wanted->delay_after_ms;
    if (ioctl(fd, TIOCSRS485, &k) < 0)
        return -1;
    if (applied)
        from_kernel(&k, applied);
    return 0;
}

int meterext_serial_get_rs485(int fd, struct meterext_rs485 *current) {
    struct serial_rs485 k;
    memset(&k, 0, sizeof k);
    if (ioctl(fd, TIOCGRS485, &k) < 0)
        return -1;
    from_kernel(&k, current);
    return 0;
}

int meterext_poll_one(int fd, short events, int64_t timeout_ns) {
    struct pollfd p = {.fd = fd, .events = events, .revents = 0};
    struct timespec ts;
    struct timespec *tsp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = (time_t)(timeout_ns / 1000000000);
        ts.tv_nsec = (long)(timeout_ns % 1000000000);
        tsp = &ts;
    }
    int n = ppoll(&p, 1, tsp, NULL);
    if (n <= 0)
        return n;
    return p.revents ? p.revents : POLLIN; // n > 0 always has revents; keep the result > 0 regardless
}

int meterext_fd_add_status_flags(int fd, int flags) {
    int current = fcntl(fd, F_GETFL);
    if (current < 0)
        return -1;
    return fcntl(fd, F_SETFL, current | flags);
}

int meterext_fd_set_cloexec(int fd) {
    int current = fcntl(fd, F_GETFD);
    if (current < 0)
        return -1;
    return fcntl(fd, F_SETFD, current | FD_CLOEXEC);
}

int meterext_pipe2(int fds[2], int flags) { return pipe2(fds, flags); }

int meterext_fd_device_numbers(int fd, unsigned int *major_out, unsigned int *minor_out) {
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -1;
    *major_out = major(st.st_rdev);
    *minor_out = minor(st.st_rdev);
    return 0;
}

// MARK: - Timing

int meterext_set_timer_slack_ns(unsigned long nanos) { return prctl(PR_SET_TIMERSLACK, nanos, 0, 0, 0); }
long meterext_get_timer_slack_ns(void) { return (long)prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0); }

// MARK: - CPUs

int meterext_usable_cpus(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) < 0)
        return -1;
    return CPU_COUNT(&set);
}

// MARK: - Pseudo-terminals

int meterext_pty_open(char *slave_path, size_t len, const char **failed_call) {
    *failed_call = "posix_openpt";
    int fd = posix_openpt(O_RDWR | O_NOCTTY);
    if (fd < 0)
        return -1;
    const char *step = NULL;
    int err = 0;
    if (grantpt(fd) < 0)
        step = "grantpt";
    else if (unlockpt(fd) < 0)
        step = "unlockpt";
    else if ((err = ptsname_r(fd, slave_path, len)) != 0) {
        step = "ptsname_r";
        errno = err;
    }
    if (step) {
        int saved = errno;
        close(fd);
        errno = saved;
        *failed_call = step;
        return -1;
    }
    *failed_call = NULL;
    return fd;
}

// MARK: - Threads

int meterext_thread_set_name(const char *name) {
    char cut[16];
    strncpy(cut, name, sizeof cut - 1);
    cut[sizeof cut - 1] = 0;
    return pthread_setname_np(pthread_self(), cut);
}

// MARK: - Libraries loaded when first needed

void *meterext_load_library(const char *soname, const char *package, const struct meterext_symbol *symbols,
                            size_t count, char *error, size_t len) {
    // RTLD_LOCAL: the library's symbols (and its dependencies') stay out of the global namespace.
    void *library = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
    if (library == NULL) {
        snprintf(error, len, "%s could not be loaded (%s); install the Debian package %s", soname, dlerror(), package);
        return NULL;
    }
    for (size_t i = 0; i < count; i++) {
        *symbols[i].slot = dlsym(library, symbols[i].name);
        if (*symbols[i].slot == NULL) {
            snprintf(error, len, "%s has no %s; install the Debian package %s", soname, symbols[i].name, package);
            return NULL;
        }
    }
    return library;
}
