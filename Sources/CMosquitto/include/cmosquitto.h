// libmosquitto (Debian libmosquitto1; headers from libmosquitto-dev), loaded with dlopen when the MQTT uplink starts
// (issue 18): a board without an uplink does not map libmosquitto, libssl and libcrypto. One cmosq_ function per
// libmosquitto function the uplink uses, same signature; all policy lives in Swift (Sources/Fleet).
#ifndef CMOSQUITTO_H
#define CMOSQUITTO_H
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <stdbool.h>

// Loads the library and runs mosquitto_lib_init once. NULL when ready; otherwise why not (names the package).
const char *cmosq_load(void);

struct mosquitto *cmosq_new(const char *id, bool clean_session, void *obj);
void cmosq_destroy(struct mosquitto *mosq);
int cmosq_int_option(struct mosquitto *mosq, enum mosq_opt_t option, int value);
int cmosq_username_pw_set(struct mosquitto *mosq, const char *username, const char *password);
int cmosq_tls_set(struct mosquitto *mosq, const char *cafile, const char *capath, const char *certfile,
                  const char *keyfile, int (*pw_callback)(char *buf, int size, int rwflag, void *userdata));
int cmosq_will_set(struct mosquitto *mosq, const char *topic, int payloadlen, const void *payload, int qos, bool retain);
void cmosq_connect_v5_callback_set(struct mosquitto *mosq,
                                   void (*on_connect)(struct mosquitto *, void *, int, int, const mosquitto_property *));
void cmosq_disconnect_v5_callback_set(struct mosquitto *mosq,
                                      void (*on_disconnect)(struct mosquitto *, void *, int, const mosquitto_property *));
void cmosq_publish_v5_callback_set(struct mosquitto *mosq,
                                   void (*on_publish)(struct mosquitto *, void *, int, int, const mosquitto_property *));
void cmosq_message_v5_callback_set(struct mosquitto *mosq,
                                   void (*on_message)(struct mosquitto *, void *, const struct mosquitto_message *,
                                                      const mosquitto_property *));
int cmosq_connect(struct mosquitto *mosq, const char *host, int port, int keepalive);
int cmosq_disconnect(struct mosquitto *mosq);
int cmosq_loop(struct mosquitto *mosq, int timeout, int max_packets);
bool cmosq_want_write(struct mosquitto *mosq);
int cmosq_publish(struct mosquitto *mosq, int *mid, const char *topic, int payloadlen, const void *payload, int qos,
                  bool retain);
int cmosq_subscribe(struct mosquitto *mosq, int *mid, const char *sub, int qos);
const char *cmosq_strerror(int mosq_errno);
const char *cmosq_reason_string(int reason_code);
const char *cmosq_connack_string(int connack_code);

#endif
