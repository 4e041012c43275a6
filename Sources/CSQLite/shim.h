// SQLite (Debian: libsqlite3-dev; the board needs libsqlite3-0) — the load-profile store (Sources/History).
#include <sqlite3.h>

// SQLITE_TRANSIENT is a macro casting -1 to a function pointer, which Swift cannot import.
static inline sqlite3_destructor_type csqlite_transient(void) { return SQLITE_TRANSIENT; }
