// See gpiod_shim.h for why this file exists.
#define _GNU_SOURCE
#include "gpiod_shim.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gpiod.h>

// MARK: - Error text helpers

// snprintf may touch errno; the caller's errno is what matters.
static void set_error(char *buf, size_t len, const char *fmt, ...) {
    int saved = errno;
    if (buf && len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, len, fmt, ap);
        va_end(ap);
    }
    errno = saved;
}

// "gpiochip0" / "/dev/gpiochip0" / "0"  ->  "/dev/gpiochip0"
static void chip_path(const char *chip, char *out, size_t len) {
    if (chip[0] == '/') {
        snprintf(out, len, "%s", chip);
        return;
    }
    int digits = chip[0] != '\0';
    for (const char *p = chip; *p; p++) {
        if (!isdigit((unsigned char)*p)) {
            digits = 0;
            break;
        }
    }
    if (digits)
        snprintf(out, len, "/dev/gpiochip%s", chip);
    else
        snprintf(out, len, "/dev/%s", chip);
}

// How a line was asked for, for messages: "GPIO17" or "gpiochip0:17" or "GPIO17 on gpiochip0".
static void describe_line(const char *chip, const char *name, unsigned int offset, char *out, size_t len) {
    if (name && chip)
        snprintf(out, len, "\"%s\" on %s", name, chip);
    else if (name)
        snprintf(out, len, "\"%s\"", name);
    else
        snprintf(out, len, "%s:%u", chip ? chip : "?", offset);
}

static const char *open_hint(int err) {
    switch (err) {
    case EACCES:
    case EPERM:
        return "add the user to the gpio group (or give it access to /dev/gpiochip* with a udev rule)";
    case ENOENT:
        return "no such GPIO chip (list them with gpiodetect)";
    case ENOTTY:
    case ENODEV:
        return "not a GPIO character device";
    default:
        return "cannot open the GPIO chip";
    }
}

// The /dev/gpiochipN entries, sorted by N, so a name search is deterministic.
#define MAX_CHIPS 64
static int chip_number_compare(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}
static int list_chips(int *numbers, int max) {
    DIR *dir = opendir("/dev");
    if (!dir)
        return -1;
    int count = 0;
    struct dirent *ent;
    while ((ent = readdir(dir)) != NULL && count < max) {
        if (strncmp(ent->d_name, "gpiochip", 8) != 0)
            continue;
        char *end;
        long n = strtol(ent->d_name + 8, &end, 10);
        if (end == ent->d_name + 8 || *end != '\0' || n < 0)
            continue;
        numbers[count++] = (int)n;
    }
    closedir(dir);
    qsort(numbers, (size_t)count, sizeof(int), chip_number_compare);
    return count;
}

// MARK: - libgpiod back ends
//
// Each back end provides:
//   chip_t  open_chip(path)                          NULL + errno on failure
//   void    close_chip(chip_t)
//   int     line_count(chip_t)
//   int     find_offset(chip_t, name)                -1 + ENOENT when the chip has no such line
//   int     request_output(handle, chip, offset, initial, consumer)   fills the handle; -1 + errno
//   void    busy_consumer(chip, offset, buf, len)    who holds the line, after EBUSY
//   int     set_value(handle, value)
//   void    release(handle)

#ifdef GPIOD_LINE_BULK_MAX_LINES
// ---------------------------------------------------------------- libgpiod 1.x (defines GPIOD_LINE_BULK_MAX_LINES)

typedef struct gpiod_chip *chip_t;

struct meterext_gpio {
    struct gpiod_chip *chip; // v1 lines belong to their chip: keep it open while the line is requested
    struct gpiod_line *line;
    unsigned int offset;
    char path[64];
};

static chip_t open_chip(const char *path) { return gpiod_chip_open(path); }
static void close_chip(chip_t chip) { gpiod_chip_close(chip); }
static int line_count(chip_t chip) { return (int)gpiod_chip_num_lines(chip); }

static int find_offset(chip_t chip, const char *name) {
    errno = 0;
    struct gpiod_line *line = gpiod_chip_find_line(chip, name);
    if (!line) {
        if (errno == 0)
            errno = ENOENT;
        return -1;
    }
    return (int)gpiod_line_offset(line);
}

static int request_output(struct meterext_gpio *g, chip_t chip, unsigned int offset, int initial,
                          const char *consumer) {
    struct gpiod_line *line = gpiod_chip_get_line(chip, offset);
    if (!line)
        return -1;
    if (gpiod_line_request_output(line, consumer, initial) < 0)
        return -1;
    g->chip = chip;
    g->line = line;
    return 0;
}

static void busy_consumer(chip_t chip, unsigned int offset, char *buf, size_t len) {
    int saved = errno;
    buf[0] = '\0';
    struct gpiod_line *line = gpiod_chip_get_line(chip, offset);
    if (line) {
        gpiod_line_update(line);
        const char *who = gpiod_line_consumer(line);
        if (who)
            snprintf(buf, len, "%s", who);
    }
    errno = saved;
}

static int set_value(struct meterext_gpio *g, int value) { return gpiod_line_set_value(g->line, value ? 1 : 0); }

static void release(struct meterext_gpio *g) {
    if (g->line)
        gpiod_line_release(g->line);
    if (g->chip)
        gpiod_chip_close(g->chip);
}

// The set-up button: input, both edges, pulled up (the button shorts the pin to ground). libgpiod 1.x has no
// kernel debounce: the Swift side debounces.
static int request_button(struct meterext_gpio *g, chip_t chip, unsigned int offset, unsigned int debounce_us,
                          const char *consumer) {
    (void)debounce_us;
    struct gpiod_line *line = gpiod_chip_get_line(chip, offset);
    if (!line)
        return -1;
    if (gpiod_line_request_both_edges_events_flags(line, consumer, GPIOD_LINE_REQUEST_FLAG_BIAS_PULL_UP) < 0)
        return -1;
    g->chip = chip;
    g->line = line;
    return 0;
}

static int wait_event(struct meterext_gpio *g, int timeout_ms) {
    struct timespec ts = {timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000L};
    int r = gpiod_line_event_wait(g->line, &ts);
    if (r <= 0)
        return r;
    struct gpiod_line_event ev;
    if (gpiod_line_event_read(g->line, &ev) < 0)
        return -1;
    return ev.event_type == GPIOD_LINE_EVENT_FALLING_EDGE ? 1 : 2;
}

const char *meterext_gpio_api(void) { return "libgpiod 1.x"; }

#else
// ---------------------------------------------------------------- libgpiod 2.x

typedef struct gpiod_chip *chip_t;

struct meterext_gpio {
    struct gpiod_line_request *request; // a v2 request outlives its chip: the chip is closed right after
    unsigned int offset;
    char path[64];
};

static chip_t open_chip(const char *path) { return gpiod_chip_open(path); }
static void close_chip(chip_t chip) { gpiod_chip_close(chip); }

static int line_count(chip_t chip) {
    struct gpiod_chip_info *info = gpiod_chip_get_info(chip);
    if (!info)
        return -1;
    int n = (int)gpiod_chip_info_get_num_lines(info);
    gpiod_chip_info_free(info);
    return n;
}

static int find_offset(chip_t chip, const char *name) {
    errno = 0;
    int offset = gpiod_chip_get_line_offset_from_name(chip, name);
    if (offset < 0 && errno == 0)
        errno = ENOENT;
    return offset;
}

// Requests one line with `settings` (prepared by the caller; freed here in every case).
static int request_line(struct meterext_gpio *g, chip_t chip, unsigned int offset,
                        struct gpiod_line_settings *settings, int settings_ok, const char *consumer) {
    int result = -1;
    struct gpiod_line_config *line_cfg = gpiod_line_config_new();
    struct gpiod_request_config *req_cfg = gpiod_request_config_new();
    if (!settings || !settings_ok || !line_cfg || !req_cfg)
        goto out;
    if (gpiod_line_config_add_line_settings(line_cfg, &offset, 1, settings) < 0)
        goto out;
    gpiod_request_config_set_consumer(req_cfg, consumer);
    g->request = gpiod_chip_request_lines(chip, req_cfg, line_cfg);
    if (g->request)
        result = 0;
out:;
    int saved = errno;
    gpiod_request_config_free(req_cfg);
    gpiod_line_config_free(line_cfg);
    gpiod_line_settings_free(settings);
    errno = saved;
    if (result == 0)
        close_chip(chip); // the request holds its own fd
    return result;
}

static int request_output(struct meterext_gpio *g, chip_t chip, unsigned int offset, int initial,
                          const char *consumer) {
    struct gpiod_line_settings *settings = gpiod_line_settings_new();
    int ok = settings && gpiod_line_settings_set_direction(settings, GPIOD_LINE_DIRECTION_OUTPUT) == 0 &&
             gpiod_line_settings_set_output_value(
                 settings, initial ? GPIOD_LINE_VALUE_ACTIVE : GPIOD_LINE_VALUE_INACTIVE) == 0;
    return request_line(g, chip, offset, settings, ok, consumer);
}

static void busy_consumer(chip_t chip, unsigned int offset, char *buf, size_t len) {
    int saved = errno;
    buf[0] = '\0';
    struct gpiod_line_info *info = gpiod_chip_get_line_info(chip, offset);
    if (info) {
        const char *who = gpiod_line_info_get_consumer(info);
        if (who)
            snprintf(buf, len, "%s", who);
        gpiod_line_info_free(info);
    }
    errno = saved;
}

static int set_value(struct meterext_gpio *g, int value) {
    return gpiod_line_request_set_value(g->request, g->offset,
                                        value ? GPIOD_LINE_VALUE_ACTIVE : GPIOD_LINE_VALUE_INACTIVE);
}

static void release(struct meterext_gpio *g) {
    if (g->request)
        gpiod_line_request_release(g->request);
}

static int request_button(struct meterext_gpio *g, chip_t chip, unsigned int offset, unsigned int debounce_us,
                          const char *consumer) {
    struct gpiod_line_settings *settings = gpiod_line_settings_new();
    int ok = settings && gpiod_line_settings_set_direction(settings, GPIOD_LINE_DIRECTION_INPUT) == 0 &&
             gpiod_line_settings_set_edge_detection(settings, GPIOD_LINE_EDGE_BOTH) == 0 &&
             gpiod_line_settings_set_bias(settings, GPIOD_LINE_BIAS_PULL_UP) == 0;
    if (ok)
        gpiod_line_settings_set_debounce_period_us(settings, debounce_us);
    return request_line(g, chip, offset, settings, ok, consumer);
}

static int wait_event(struct meterext_gpio *g, int timeout_ms) {
    int r = gpiod_line_request_wait_edge_events(g->request, (int64_t)timeout_ms * 1000000LL);
    if (r <= 0)
        return r;
    struct gpiod_edge_event_buffer *buf = gpiod_edge_event_buffer_new(1);
    if (!buf)
        return -1;
    int result = -1;
    if (gpiod_line_request_read_edge_events(g->request, buf, 1) > 0) {
        struct gpiod_edge_event *ev = gpiod_edge_event_buffer_get_event(buf, 0);
        result = ev && gpiod_edge_event_get_event_type(ev) == GPIOD_EDGE_EVENT_FALLING_EDGE ? 1 : 2;
    }
    int saved = errno;
    gpiod_edge_event_buffer_free(buf);
    errno = saved;
    return result;
}

const char *meterext_gpio_api(void) { return "libgpiod 2.x"; }

#endif

// MARK: - Shared request logic (same on both back ends)

// Request `offset` on an already-open chip; on success the chip belongs to the handle (v1) or is closed (v2).
// `button`: request as the set-up button (input, edges, pull-up, `initial` is the debounce in µs) instead of an output.
static int request_on_chip(chip_t chip, const char *path, const char *what, unsigned int offset, int initial,
                           int button, const char *consumer, struct meterext_gpio **out, char *errbuf,
                           size_t errlen) {
    int lines = line_count(chip);
    if (lines >= 0 && offset >= (unsigned int)lines) {
        close_chip(chip);
        errno = EINVAL;
        set_error(errbuf, errlen, "GPIO line %s: %s has %d lines (offsets 0-%d)", what, path, lines, lines - 1);
        return -1;
    }
    struct meterext_gpio *g = calloc(1, sizeof *g);
    if (!g) {
        close_chip(chip);
        errno = ENOMEM;
        set_error(errbuf, errlen, "GPIO line %s: out of memory", what);
        return -1;
    }
    g->offset = offset;
    snprintf(g->path, sizeof g->path, "%s", path);
    int requested = button ? request_button(g, chip, offset, (unsigned int)initial, consumer)
                           : request_output(g, chip, offset, initial, consumer);
    if (requested < 0) {
        int err = errno;
        if (err == EBUSY) {
            char who[64];
            busy_consumer(chip, offset, who, sizeof who);
            set_error(errbuf, errlen, "GPIO line %s (%s offset %u) is busy, used by \"%s\"", what, path, offset,
                      who[0] ? who : "an unnamed consumer (kernel driver or device-tree hog?)");
        } else if (err == EACCES || err == EPERM) {
            set_error(errbuf, errlen, "GPIO line %s (%s offset %u): not permitted; %s", what, path, offset,
                      open_hint(err));
        } else {
            set_error(errbuf, errlen, "GPIO line %s (%s offset %u): the request as %s failed", what, path,
                      offset, button ? "input with edge events" : "output");
        }
        close_chip(chip);
        free(g);
        errno = err;
        return -1;
    }
    *out = g;
    return 0;
}

static int open_line(const char *chip, const char *line_name, unsigned int offset, int initial_value, int button,
                     const char *consumer, struct meterext_gpio **out, char *errbuf, size_t errlen) {
    char what[96];
    char path[64];
    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!out || (!chip && !line_name)) {
        errno = EINVAL;
        set_error(errbuf, errlen, "GPIO line: give a line name or a chip and offset");
        return -1;
    }
    *out = NULL;
    if (!consumer)
        consumer = "meterext";
    describe_line(chip, line_name, offset, what, sizeof what);

    // One chip named: open it, resolve the name there if one was given.
    if (chip) {
        chip_path(chip, path, sizeof path);
        chip_t c = open_chip(path);
        if (!c) {
            set_error(errbuf, errlen, "GPIO line %s: cannot open %s; %s", what, path, open_hint(errno));
            return -1;
        }
        if (line_name) {
            int found = find_offset(c, line_name);
            if (found < 0) {
                int err = errno;
                close_chip(c);
                errno = err;
                set_error(errbuf, errlen, "GPIO line %s: %s has no line of that name (list them with gpioinfo)",
                          what, path);
                return -1;
            }
            offset = (unsigned int)found;
        }
        return request_on_chip(c, path, what, offset, initial_value, button, consumer, out, errbuf, errlen);
    }

    // Name only: search every chip. Raspberry Pi 5 moved the header pins to another chip number, so a name
    // (GPIO17) is the portable way to ask for a pin.
    int numbers[MAX_CHIPS];
    int count = list_chips(numbers, MAX_CHIPS);
    if (count < 0) {
        set_error(errbuf, errlen, "GPIO line %s: cannot list /dev to find GPIO chips", what);
        return -1;
    }
    if (count == 0) {
        errno = ENOENT;
        set_error(errbuf, errlen,
                  "GPIO line %s: no GPIO chips at all (no /dev/gpiochip*): this machine has no GPIO controller, "
                  "or /dev/gpiochip* is not passed into the container",
                  what);
        return -1;
    }
    int denied = 0;
    char denied_path[64] = "";
    for (int i = 0; i < count; i++) {
        snprintf(path, sizeof path, "/dev/gpiochip%d", numbers[i]);
        chip_t c = open_chip(path);
        if (!c) {
            if (errno == EACCES || errno == EPERM) {
                denied = errno;
                snprintf(denied_path, sizeof denied_path, "%s", path);
            }
            continue;
        }
        int found = find_offset(c, line_name);
        if (found >= 0)
            return request_on_chip(c, path, what, (unsigned int)found, initial_value, button, consumer, out,
                                   errbuf, errlen);
        close_chip(c);
    }
    if (denied) {
        errno = denied;
        set_error(errbuf, errlen, "GPIO line %s: not found on the chips that could be opened, and %s could not "
                  "be opened; %s", what, denied_path, open_hint(denied));
        return -1;
    }
    errno = ENOENT;
    set_error(errbuf, errlen, "GPIO line %s: no line of that name on any of the %d GPIO chips (gpioinfo lists "
              "the names; or give chip and offset, e.g. gpio:gpiochip0:17)", what, count);
    return -1;
}

int meterext_gpio_open(const char *chip, const char *line_name, unsigned int offset, int initial_value,
                       const char *consumer, struct meterext_gpio **out, char *errbuf, size_t errlen) {
    return open_line(chip, line_name, offset, initial_value, 0, consumer, out, errbuf, errlen);
}

int meterext_gpio_open_button(const char *chip, const char *line_name, unsigned int offset, unsigned int debounce_us,
                              const char *consumer, struct meterext_gpio **out, char *errbuf, size_t errlen) {
    return open_line(chip, line_name, offset, (int)debounce_us, 1, consumer, out, errbuf, errlen);
}

int meterext_gpio_wait_edge(struct meterext_gpio *gpio, int timeout_ms) {
    if (!gpio) {
        errno = EBADF;
        return -1;
    }
    return wait_event(gpio, timeout_ms);
}

int meterext_gpio_set(struct meterext_gpio *gpio, int value) {
    if (!gpio) {
        errno = EBADF;
        return -1;
    }
    return set_value(gpio, value);
}

void meterext_gpio_close(struct meterext_gpio *gpio) {
    if (!gpio)
        return;
    release(gpio);
    free(gpio);
}

const char *meterext_gpio_chip_path(const struct meterext_gpio *gpio) { return gpio ? gpio->path : ""; }
unsigned int meterext_gpio_offset(const struct meterext_gpio *gpio) { return gpio ? gpio->offset : 0; }
