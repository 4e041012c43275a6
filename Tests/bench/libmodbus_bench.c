/* The peer for `make bench`: libmodbus's RTU master doing the same reads as `meterext bench modbus`, against the
 * same slave, reporting the same figures (CPU time from getrusage, wall time). */
#include <errno.h>
#include <modbus.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

static double seconds(struct timeval t) { return t.tv_sec + t.tv_usec / 1e6; }

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: %s DEVICE COUNT\n", argv[0]); return 2; }
    int count = atoi(argv[2]);
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
    getrusage(RUSAGE_SELF, &before);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < count; i++) {
        if (modbus_read_registers(ctx, 0x0030, 52, regs) != 52) failed++;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    getrusage(RUSAGE_SELF, &after);
    double cpu = seconds(after.ru_utime) - seconds(before.ru_utime) + seconds(after.ru_stime) - seconds(before.ru_stime);
    double wall = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("{\"transactions\": %d, \"failed\": %d, \"cpu_seconds\": %.6f, \"wall_seconds\": %.6f}\n",
           count, failed, cpu, wall);
    modbus_close(ctx);
    modbus_free(ctx);
    return 0;
}
