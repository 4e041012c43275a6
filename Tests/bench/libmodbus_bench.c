/* The peer for `make bench`: libmodbus's RTU master doing the same reads as `meterext bench modbus`, against the
 * same slave, reporting the same figures (CPU time and context switches from getrusage, wall time, and the thread's
 * CPU inside the transaction calls only). An optional GAP_US idles between transactions as `--gap-us` does. */
#define _GNU_SOURCE
#include <errno.h>
#include <modbus.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

static double seconds(struct timeval t) { return t.tv_sec + t.tv_usec / 1e6; }

static uint64_t thread_cpu_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: %s DEVICE COUNT [GAP_US]\n", argv[0]); return 2; }
    int count = atoi(argv[2]);
    long gap_us = argc > 3 ? atol(argv[3]) : 0;
    modbus_t *ctx = modbus_new_rtu(argv[1], 9600, 'N', 8, 1);
    if (!ctx || modbus_set_slave(ctx, 1) != 0 || modbus_connect(ctx) != 0) {
        fprintf(stderr, "libmodbus: cannot open %s: %s\n", argv[1], modbus_strerror(errno));
        return 1;
    }
    modbus_set_response_timeout(ctx, 0, 600000);
    uint16_t regs[52];
    struct rusage before, after;
    struct timespec t0, t1;
    int failed = 0;
    uint64_t in_call = 0;
    getrusage(RUSAGE_SELF, &before);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < count; i++) {
        if (gap_us > 0 && i > 0) {
            struct timespec gap = {gap_us / 1000000, (gap_us % 1000000) * 1000};
            while (clock_nanosleep(CLOCK_MONOTONIC, 0, &gap, &gap) == EINTR) {}
        }
        uint64_t c0 = thread_cpu_ns();
        if (modbus_read_registers(ctx, 0x0030, 52, regs) != 52) failed++;
        in_call += thread_cpu_ns() - c0;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    getrusage(RUSAGE_SELF, &after);
    double user = seconds(after.ru_utime) - seconds(before.ru_utime);
    double sys = seconds(after.ru_stime) - seconds(before.ru_stime);
    double wall = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("{\"transactions\": %d, \"failed\": %d, \"cpu_seconds\": %.6f, \"wall_seconds\": %.6f, "
           "\"user_seconds\": %.6f, \"system_seconds\": %.6f, \"voluntary_switches\": %ld, "
           "\"involuntary_switches\": %ld, \"in_call_cpu_seconds\": %.6f, \"gap_us\": %ld}\n",
           count, failed, user + sys, wall, user, sys, after.ru_nvcsw - before.ru_nvcsw,
           after.ru_nivcsw - before.ru_nivcsw, in_call / 1e9, gap_us);
    modbus_close(ctx);
    modbus_free(ctx);
    return 0;
}
