#pragma once
// C shim under Platform and MeterHardware: the calls Swift cannot make directly.
//
//   - Variadic calls (ioctl, fcntl, prctl) Swift cannot call.
//   - Declarations Glibc's Swift module does not export: struct serial_rs485 / TIOCSRS485 / TIOCSERGETLSR
//     (<linux/serial.h>, <sys/ioctl.h>), and the _GNU_SOURCE / _XOPEN_SOURCE ones (ppoll, ptsname_r,
//     pthread_setname_np).
//
// Every function returns -1 and leaves errno set on failure, like the syscalls it wraps; the Swift side turns that
// into a thrown SystemError. Nothing here prints or aborts. libgpiod stays in CGPIOD, alone.

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: Serial ioctls

/// TIOCSERGETLSR: sets *empty to 1 when the transmitter shift register and FIFO are empty (TIOCSER_TEMT), 0 if
/// not. Returns -1 with errno (ENOTTY/EINVAL/ENOIOCTLCMD) when the driver can't tell, e.g. on a pty or USB adapter.
int meterext_serial_transmitter_empty(int fd, int *empty);

/// TIOCMBIS / TIOCMBIC on TIOCM_RTS: assert (1) or deassert (0) the RTS modem-control line.
int meterext_serial_set_rts(int fd, int asserted);

/// TIOCEXCL: refuse further opens of this tty by other processes (root excepted).
int meterext_serial_set_exclusive(int fd);

/// Kernel RS485 mode settings, the subset of struct serial_rs485 meterext uses.
struct meterext_rs485 {
    uint32_t enabled;            // SER_RS485_ENABLED
    uint32_t rts_on_send;        // SER_RS485_RTS_ON_SEND (else RTS_AFTER_SEND)
    uint32_t delay_before_ms;    // delay_rts_before_send
    uint32_t delay_after_ms;     // delay_rts_after_send
};

/// TIOCSRS485. The kernel writes back what it actually applied (unsupported bits cleared, delays clamped);
/// `applied` receives that, so the caller can check nothing was dropped. `applied` may be NULL.
int meterext_serial_set_rs485(int fd, const struct meterext_rs485 *wanted, struct meterext_rs485 *applied);

/// TIOCGRS485.
int meterext_serial_get_rs485(int fd, struct meterext_rs485 *current);

/// ppoll() on one fd with a nanosecond timeout (timeout_ns < 0: wait forever). Returns revents (> 0), 0 on
/// timeout, or -1 with errno. Glibc's ppoll needs _GNU_SOURCE, which Swift's Glibc module doesn't define.
int meterext_poll_one(int fd, short events, int64_t timeout_ns);

/// fcntl(F_GETFL/F_SETFL) helper: add `flags` to the file status flags (used for O_NONBLOCK on a pty master).
int meterext_fd_add_status_flags(int fd, int flags);

/// fcntl(F_SETFD, FD_CLOEXEC).
int meterext_fd_set_cloexec(int fd);

/// pipe2(fds, flags) (a _GNU_SOURCE declaration): O_CLOEXEC from birth, so no concurrent spawn inherits an end.
int meterext_pipe2(int fds[2], int flags);

/// Major/minor of the character device behind fd (st_rdev), or -1 with errno.
int meterext_fd_device_numbers(int fd, unsigned int *major_out, unsigned int *minor_out);

// MARK: Timing

/// prctl(PR_SET_TIMERSLACK / PR_GET_TIMERSLACK) for the calling thread (prctl is variadic).
int meterext_set_timer_slack_ns(unsigned long nanos);
long meterext_get_timer_slack_ns(void);

// MARK: Pseudo-terminals

/// posix_openpt(O_RDWR|O_NOCTTY) + grantpt + unlockpt + ptsname_r (all hidden behind _XOPEN_SOURCE/_GNU_SOURCE in
/// Glibc's Swift module). Returns the master fd and writes the slave path, or -1 with errno and `*failed_call` set
/// to the name of the call that failed.
int meterext_pty_open(char *slave_path, size_t len, const char **failed_call);

// MARK: CPUs

/// CPUs the calling thread may run on (sched_getaffinity + CPU_COUNT, macros Swift cannot import): a `taskset`, a
/// systemd `CPUAffinity=` or a cpuset narrows it. Returns -1 with errno when the kernel refuses.
int meterext_usable_cpus(void);

// MARK: Threads

/// Names the calling thread (pthread_setname_np; at most 15 bytes reach the kernel, the rest is cut), so `top -H`
/// and /proc/self/task/*/comm show it. Returns 0 or an error number (not -1/errno: pthread style).
int meterext_thread_set_name(const char *name);

// MARK: Libraries loaded when first needed (issue 18)

/// One function a loaded library must provide: its name and where to keep its address.
struct meterext_symbol { const char *name; void **slot; };

/// dlopen(soname, RTLD_NOW | RTLD_LOCAL) and dlsym of every symbol into its slot. Returns the library handle, or
/// NULL with a message naming the Debian `package` to install in `error` (size `len`). The library stays loaded.
void *meterext_load_library(const char *soname, const char *package, const struct meterext_symbol *symbols,
                            size_t count, char *error, size_t len);

#ifdef __cplusplus
}
#endif
