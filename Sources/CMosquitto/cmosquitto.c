#include "cmosquitto.h"
#include "cplatform.h"
#include <pthread.h>
#include <stdio.h>

// The soname of Debian's libmosquitto1, the library the headers come from. The .deb depends on libmosquitto1
// (board/deb-control.sh), so this only fails on a hand-installed binary.
#define CMOSQ_SONAME "libmosquitto.so.1"

static struct {
    int (*lib_init)(void);
    struct mosquitto *(*new_)(const char *, bool, void *);
    void (*destroy)(struct mosquitto *);
    int (*int_option)(struct mosquitto *, enum mosq_opt_t, int);
    int (*username_pw_set)(struct mosquitto *, const char *, const char *);
    int (*tls_set)(struct mosquitto *, const char *, const char *, const char *, const char *,
                   int (*)(char *, int, int, void *));
    int (*will_set)(struct mosquitto *, const char *, int, const void *, int, bool);
    void (*connect_v5_callback_set)(struct mosquitto *, void (*)(struct mosquitto *, void *, int, int,
                                                                 const mosquitto_property *));
    void (*disconnect_v5_callback_set)(struct mosquitto *, void (*)(struct mosquitto *, void *, int,
                                                                    const mosquitto_property *));
    void (*publish_v5_callback_set)(struct mosquitto *, void (*)(struct mosquitto *, void *, int, int,
                                                                 const mosquitto_property *));
    void (*message_v5_callback_set)(struct mosquitto *, void (*)(struct mosquitto *, void *,
                                                                 const struct mosquitto_message *,
                                                                 const mosquitto_property *));
    int (*connect)(struct mosquitto *, const char *, int, int);
    int (*disconnect)(struct mosquitto *);
    int (*loop)(struct mosquitto *, int, int);
    bool (*want_write)(struct mosquitto *);
    int (*publish)(struct mosquitto *, int *, const char *, int, const void *, int, bool);
    int (*subscribe)(struct mosquitto *, int *, const char *, int);
    const char *(*strerror)(int);
    const char *(*reason_string)(int);
    const char *(*connack_string)(int);
} mosq;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static char load_error[512];

static void load(void) {
    const struct meterext_symbol symbols[] = {
        {"mosquitto_lib_init", (void **)&mosq.lib_init},
        {"mosquitto_new", (void **)&mosq.new_},
        {"mosquitto_destroy", (void **)&mosq.destroy},
        {"mosquitto_int_option", (void **)&mosq.int_option},
        {"mosquitto_username_pw_set", (void **)&mosq.username_pw_set},
        {"mosquitto_tls_set", (void **)&mosq.tls_set},
        {"mosquitto_will_set", (void **)&mosq.will_set},
        {"mosquitto_connect_v5_callback_set", (void **)&mosq.connect_v5_callback_set},
        {"mosquitto_disconnect_v5_callback_set", (void **)&mosq.disconnect_v5_callback_set},
        {"mosquitto_publish_v5_callback_set", (void **)&mosq.publish_v5_callback_set},
        {"mosquitto_message_v5_callback_set", (void **)&mosq.message_v5_callback_set},
        {"mosquitto_connect", (void **)&mosq.connect},
        {"mosquitto_disconnect", (void **)&mosq.disconnect},
        {"mosquitto_loop", (void **)&mosq.loop},
        {"mosquitto_want_write", (void **)&mosq.want_write},
        {"mosquitto_publish", (void **)&mosq.publish},
        {"mosquitto_subscribe", (void **)&mosq.subscribe},
        {"mosquitto_strerror", (void **)&mosq.strerror},
        {"mosquitto_reason_string", (void **)&mosq.reason_string},
        {"mosquitto_connack_string", (void **)&mosq.connack_string},
    };
    if (meterext_load_library(CMOSQ_SONAME, "libmosquitto1", symbols, sizeof symbols / sizeof symbols[0], load_error,
                               sizeof load_error) == NULL) {
        return;
    }
    // mosquitto_lib_init is not thread-safe: pthread_once runs it exactly once. The library stays loaded for the
    // life of the process (OpenSSL is not made to be unloaded).
    if (mosq.lib_init() != MOSQ_ERR_SUCCESS) {
        snprintf(load_error, sizeof load_error, "libmosquitto could not be initialised (mosquitto_lib_init failed)");
    }
}

const char *cmosq_load(void) {
    pthread_once(&load_once, load);
    return load_error[0] != 0 ? load_error : NULL;
}

struct mosquitto *cmosq_new(const char *id, bool clean_session, void *obj) { return mosq.new_(id, clean_session, obj); }
void cmosq_destroy(struct mosquitto *m) { mosq.destroy(m); }
int cmosq_int_option(struct mosquitto *m, enum mosq_opt_t option, int value) { return mosq.int_option(m, option, value); }
int cmosq_username_pw_set(struct mosquitto *m, const char *username, const char *password) {
    return mosq.username_pw_set(m, username, password);
}
int cmosq_tls_set(struct mosquitto *m, const char *cafile, const char *capath, const char *certfile,
                  const char *keyfile, int (*pw_callback)(char *, int, int, void *)) {
    return mosq.tls_set(m, cafile, capath, certfile, keyfile, pw_callback);
}
int cmosq_will_set(struct mosquitto *m, const char *topic, int payloadlen, const void *payload, int qos, bool retain) {
    return mosq.will_set(m, topic, payloadlen, payload, qos, retain);
}
void cmosq_connect_v5_callback_set(struct mosquitto *m,
                                   void (*f)(struct mosquitto *, void *, int, int, const mosquitto_property *)) {
    mosq.connect_v5_callback_set(m, f);
}
void cmosq_disconnect_v5_callback_set(struct mosquitto *m,
                                      void (*f)(struct mosquitto *, void *, int, const mosquitto_property *)) {
    mosq.disconnect_v5_callback_set(m, f);
}
void cmosq_publish_v5_callback_set(struct mosquitto *m,
                                   void (*f)(struct mosquitto *, void *, int, int, const mosquitto_property *)) {
    mosq.publish_v5_callback_set(m, f);
}
void cmosq_message_v5_callback_set(struct mosquitto *m,
                                   void (*f)(struct mosquitto *, void *, const struct mosquitto_message *,
                                             const mosquitto_property *)) {
    mosq.message_v5_callback_set(m, f);
}
int cmosq_connect(struct mosquitto *m, const char *host, int port, int keepalive) {
    return mosq.connect(m, host, port, keepalive);
}
int cmosq_disconnect(struct mosquitto *m) { return mosq.disconnect(m); }
int cmosq_loop(struct mosquitto *m, int timeout, int max_packets) { return mosq.loop(m, timeout, max_packets); }
bool cmosq_want_write(struct mosquitto *m) { return mosq.want_write(m); }
int cmosq_publish(struct mosquitto *m, int *mid, const char *topic, int payloadlen, const void *payload, int qos,
                  bool retain) {
    return mosq.publish(m, mid, topic, payloadlen, payload, qos, retain);
}
int cmosq_subscribe(struct mosquitto *m, int *mid, const char *sub, int qos) { return mosq.subscribe(m, mid, sub, qos); }
const char *cmosq_strerror(int e) { return mosq.strerror(e); }
const char *cmosq_reason_string(int code) { return mosq.reason_string(code); }
const char *cmosq_connack_string(int code) { return mosq.connack_string(code); }
