/* Issue 17 bench: a libmodbus TCP master reading FC03 as fast as it can for N seconds; prints the count of good
 * replies and of failures. Usage: modbus_tcp_reader HOST PORT UNIT START COUNT SECONDS */
#include <modbus.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 7) return 2;
    modbus_t *ctx = modbus_new_tcp(argv[1], atoi(argv[2]));
    if (!ctx || modbus_connect(ctx) != 0) { fprintf(stderr, "connect failed\n"); return 1; }
    modbus_set_slave(ctx, atoi(argv[3]));
    int start = atoi(argv[4]), count = atoi(argv[5]);
    double end = now() + atof(argv[6]);
    uint16_t regs[125];
    long ok = 0, failed = 0;
    while (now() < end) {
        if (modbus_read_registers(ctx, start, count, regs) == count) ok++; else failed++;
    }
    printf("%ld %ld\n", ok, failed);
    modbus_close(ctx);
    modbus_free(ctx);
    return 0;
}
