#pragma once
// C shim under MeterHardware.
//
// libgpiod only: its 1.x and 2.x APIs are incompatible. The shim picks one at compile time and exposes a few
// functions that mean the same on both, so no Swift code knows which libgpiod it was built against. Every other C
// helper (serial ioctls, ppoll, ptys, prctl) lives in CPlatform.
//
// Every function returns -1 and leaves errno set on failure, like the syscalls it wraps; the Swift side turns that
// into a thrown SystemError. Nothing here prints or aborts.

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: GPIO output line

/// One requested GPIO output line (opaque).
struct meterext_gpio;

/// Request one GPIO line as an output driven to `initial_value` (0 or 1).
///
/// The line is found either by name (`line_name` non-NULL; every /dev/gpiochip* is searched unless `chip` narrows
/// it to one) or by `chip` + `offset` (`line_name` NULL). `chip` may be "gpiochip0", "/dev/gpiochip0" or "0".
/// On failure returns -1, sets errno, and writes a one-line explanation naming the line into `errbuf` (without the
/// strerror text, which the caller adds).
int meterext_gpio_open(const char *chip, const char *line_name, unsigned int offset, int initial_value,
                       const char *consumer, struct meterext_gpio **out, char *errbuf, size_t errlen);

/// Request one GPIO line as the set-up button: input, pulled up (the button shorts it to ground), edge events on
/// both edges, kernel debounce of `debounce_us` where libgpiod 2.x offers it. Found as in `meterext_gpio_open`.
int meterext_gpio_open_button(const char *chip, const char *line_name, unsigned int offset, unsigned int debounce_us,
                              const char *consumer, struct meterext_gpio **out, char *errbuf, size_t errlen);

/// Wait up to `timeout_ms` for an edge on a button line: 1 falling (pressed), 2 rising (released), 0 timeout,
/// -1 with errno set.
int meterext_gpio_wait_edge(struct meterext_gpio *gpio, int timeout_ms);

/// Drive the line to 0 or 1. Returns 0, or -1 with errno set.
int meterext_gpio_set(struct meterext_gpio *gpio, int value);

/// Release the line and free the handle. NULL is accepted.
void meterext_gpio_close(struct meterext_gpio *gpio);

/// "libgpiod 1.x" or "libgpiod 2.x": which API this shim was compiled against.
const char *meterext_gpio_api(void);

/// The chip (path) and offset the line resolved to; valid for the lifetime of the handle.
const char *meterext_gpio_chip_path(const struct meterext_gpio *gpio);
unsigned int meterext_gpio_offset(const struct meterext_gpio *gpio);

#ifdef __cplusplus
}
#endif
