/* A Modbus server built on libmodbus (a C implementation independent of pymodbus), for the
 * interoperability tests. Usage:
 *   libmodbus_server rtu DEVICE BAUD UNIT [hr:ADDR=VALUE ...]
 *   libmodbus_server tcp PORT [hr:ADDR=VALUE ...]
 * Each area has 100 entries (0..99); reads beyond answer exception 02. Prints "ready", then
 * "fc N" for every request received, so the test can prove that only reads arrived. */
#include <errno.h>
#include <modbus.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int tcp = argc > 2 && strcmp(argv[1], "tcp") == 0;
    int first_value = tcp ? 3 : 5;
    modbus_t *ctx;
    int listener = -1;
    if (tcp) {
        ctx = modbus_new_tcp("127.0.0.1", atoi(argv[2]));
        listener = modbus_tcp_listen(ctx, 1);
        if (listener < 0) { perror("listen"); return 1; }
    } else {
        if (argc < 5) return 2;
        ctx = modbus_new_rtu(argv[2], atoi(argv[3]), 'N', 8, 1);
        modbus_set_slave(ctx, atoi(argv[4]));
        if (modbus_connect(ctx) == -1) { perror("connect"); return 1; }
    }
    modbus_mapping_t *map = modbus_mapping_new(100, 100, 100, 100);
    for (int i = first_value; i < argc; i++) {
        int addr, value;
        if (sscanf(argv[i], "hr:%d=%d", &addr, &value) == 2 && addr < 100) map->tab_registers[addr] = value;
        if (sscanf(argv[i], "ir:%d=%d", &addr, &value) == 2 && addr < 100) map->tab_input_registers[addr] = value;
        if (sscanf(argv[i], "co:%d=%d", &addr, &value) == 2 && addr < 100) map->tab_bits[addr] = value;
    }
    printf("ready\n");
    fflush(stdout);
    uint8_t query[MODBUS_TCP_MAX_ADU_LENGTH];
    int header = modbus_get_header_length(ctx);
    for (;;) {
        if (tcp && modbus_get_socket(ctx) < 0) {
            if (modbus_tcp_accept(ctx, &listener) < 0) return 1;
        }
        int rc = modbus_receive(ctx, query);
        if (rc > 0) {
            printf("fc %d\n", query[header]);
            fflush(stdout);
            modbus_reply(ctx, query, rc, map);
        } else if (rc == -1 && tcp) {
            close(modbus_get_socket(ctx));
            modbus_set_socket(ctx, -1);
        }
    }
}
