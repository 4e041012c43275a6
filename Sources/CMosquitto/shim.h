// libmosquitto (Debian libmosquitto-dev): the MQTT client library the fleet uplink runs on (issue 16).
#include <mosquitto.h>
#include <mqtt_protocol.h>
