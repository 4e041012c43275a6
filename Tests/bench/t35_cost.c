/* What keeping t3.5 of silence before every request costs in CPU on this machine, with nothing else different
 * (issue 18 goal 1). Not part of `make bench`: run by hand against the simulator on a pty, see Tests/bench/notes.md.
 *
 * Both modes make the same request/reply syscalls as `meterext bench modbus` (write, ppoll, read of the whole
 * reply); `t35` first waits for t3.5 after the last reply byte with one ppoll that times out (what RS485Port does
 * back to back), `none` sends at once (what libmodbus does). CPU is this thread's getrusage over the loop.
 *
 *   gcc -O2 -o t35_cost Tests/bench/t35_cost.c && ./t35_cost /path/to/pty none 300 && ./t35_cost /path/to/pty t35 300 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static double seconds(struct timeval t) { return t.tv_sec + t.tv_usec / 1e6; }

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: %s DEVICE none|t35 COUNT\n", argv[0]); return 2; }
    int wait_t35 = strcmp(argv[2], "t35") == 0;
    int count = atoi(argv[3]);
    int fd = open(argv[1], O_RDWR | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) { perror(argv[1]); return 1; }
    struct termios t;
    tcgetattr(fd, &t);
    cfmakeraw(&t);
    t.c_cc[VMIN] = 0;
    t.c_cc[VTIME] = 0;
    cfsetspeed(&t, B9600);
    tcsetattr(fd, TCSANOW, &t);
    tcflush(fd, TCIOFLUSH);
    prctl(PR_SET_TIMERSLACK, 1000UL);  // as `meterext bench modbus` sets for its thread
    const unsigned char request[8] = {0x01, 0x03, 0x00, 0x30, 0x00, 0x34, 0x44, 0x12};  // FC03 0x0030 × 52
    const uint64_t t35 = 3645833;  // 9600 8N1: 3.5 × 10 bits / 9600 baud
    unsigned char reply[512];
    uint64_t last = now_ns();
    int failed = 0;
    struct rusage before, after;
    getrusage(RUSAGE_THREAD, &before);
    uint64_t wall0 = now_ns();
    for (int i = 0; i < count; i++) {
        struct pollfd p = {fd, POLLIN, 0};
        struct timespec ts;
        uint64_t n = now_ns();
        if (wait_t35 && n < last + t35) {
            ts.tv_sec = 0;
            ts.tv_nsec = (long)(last + t35 - n);
            ppoll(&p, 1, &ts, NULL);
        }
        if (write(fd, request, sizeof request) != sizeof request) { failed++; continue; }
        int got = 0;
        while (got < 109) {
            ts.tv_sec = 0;
            ts.tv_nsec = 600000000;
            if (ppoll(&p, 1, &ts, NULL) <= 0) { failed++; break; }
            ssize_t r = read(fd, reply + got, sizeof reply - got);
            if (r > 0) got += (int)r;
        }
        last = now_ns();
    }
    uint64_t wall1 = now_ns();
    getrusage(RUSAGE_THREAD, &after);
    double user = seconds(after.ru_utime) - seconds(before.ru_utime);
    double sys = seconds(after.ru_stime) - seconds(before.ru_stime);
    printf("{\"mode\": \"%s\", \"transactions\": %d, \"failed\": %d, \"cpu_us_per_transaction\": %.1f, "
           "\"user_us\": %.1f, \"system_us\": %.1f, \"voluntary_switches_per_transaction\": %.2f, "
           "\"wall_ms_per_transaction\": %.2f}\n",
           argv[2], count, failed, (user + sys) / count * 1e6, user / count * 1e6, sys / count * 1e6,
           (double)(after.ru_nvcsw - before.ru_nvcsw) / count, (wall1 - wall0) / 1e6 / count);
    close(fd);
    return 0;
}
