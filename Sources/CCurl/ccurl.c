#include "ccurl.h"
#include "cplatform.h"
#include <pthread.h>
#include <stdio.h>
#include <string.h>

// The soname of Debian's libcurl4 (OpenSSL flavour), the library the headers above come from. The .deb depends on
// libcurl4 (board/deb-control.sh), so this only fails on a hand-installed binary.
#define CCURL_SONAME "libcurl.so.4"

static struct {
    CURLcode (*global_init)(long flags);
    CURL *(*easy_init)(void);
    void (*easy_cleanup)(CURL *handle);
    CURLcode (*easy_setopt)(CURL *handle, CURLoption option, ...);
    CURLcode (*easy_getinfo)(CURL *handle, CURLINFO info, ...);
    CURLcode (*easy_perform)(CURL *handle);
    const char *(*easy_strerror)(CURLcode code);
    struct curl_slist *(*slist_append)(struct curl_slist *list, const char *string);
    void (*slist_free_all)(struct curl_slist *list);
} curl;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static char load_error[512];

static void load(void) {
    const struct meterext_symbol symbols[] = {
        {"curl_global_init", (void **)&curl.global_init},
        {"curl_easy_init", (void **)&curl.easy_init},
        {"curl_easy_cleanup", (void **)&curl.easy_cleanup},
        {"curl_easy_setopt", (void **)&curl.easy_setopt},
        {"curl_easy_getinfo", (void **)&curl.easy_getinfo},
        {"curl_easy_perform", (void **)&curl.easy_perform},
        {"curl_easy_strerror", (void **)&curl.easy_strerror},
        {"curl_slist_append", (void **)&curl.slist_append},
        {"curl_slist_free_all", (void **)&curl.slist_free_all},
    };
    if (meterext_load_library(CCURL_SONAME, "libcurl4", symbols, sizeof symbols / sizeof symbols[0], load_error,
                               sizeof load_error) == NULL) {
        return;
    }
    // curl_global_init is not safe to race with other threads: pthread_once runs it exactly once. The library stays
    // loaded for the life of the process (libcurl and its TLS libraries are not made to be unloaded).
    if (curl.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(load_error, sizeof load_error, "libcurl could not be initialised (curl_global_init failed)");
    }
}

const char *ccurl_load(void) {
    pthread_once(&load_once, load);
    return load_error[0] != 0 ? load_error : NULL;
}

CURL *ccurl_easy_init(void) { return curl.easy_init(); }
void ccurl_easy_cleanup(CURL *handle) { curl.easy_cleanup(handle); }
CURLcode ccurl_easy_perform(CURL *handle) { return curl.easy_perform(handle); }
const char *ccurl_easy_strerror(CURLcode code) { return curl.easy_strerror(code); }

struct curl_slist *ccurl_slist_append(struct curl_slist *list, const char *string) {
    return curl.slist_append(list, string);
}

void ccurl_slist_free_all(struct curl_slist *list) {
    if (list != NULL) curl.slist_free_all(list);
}

CURLcode ccurl_set_long(CURL *handle, CURLoption option, long value) {
    return curl.easy_setopt(handle, option, value);
}

CURLcode ccurl_set_offset(CURL *handle, CURLoption option, curl_off_t value) {
    return curl.easy_setopt(handle, option, value);
}

CURLcode ccurl_set_string(CURL *handle, CURLoption option, const char *value) {
    return curl.easy_setopt(handle, option, value);
}

CURLcode ccurl_set_pointer(CURL *handle, CURLoption option, void *value) {
    return curl.easy_setopt(handle, option, value);
}

CURLcode ccurl_set_write_function(CURL *handle, ccurl_write_fn function, void *context) {
    CURLcode rc = curl.easy_setopt(handle, CURLOPT_WRITEFUNCTION, function);
    if (rc != CURLE_OK) return rc;
    return curl.easy_setopt(handle, CURLOPT_WRITEDATA, context);
}

CURLcode ccurl_set_progress_function(CURL *handle, ccurl_progress_fn function, void *context) {
    CURLcode rc = curl.easy_setopt(handle, CURLOPT_XFERINFOFUNCTION, function);
    if (rc != CURLE_OK) return rc;
    rc = curl.easy_setopt(handle, CURLOPT_XFERINFODATA, context);
    if (rc != CURLE_OK) return rc;
    return curl.easy_setopt(handle, CURLOPT_NOPROGRESS, 0L);
}

CURLcode ccurl_set_opensocket_function(CURL *handle, ccurl_opensocket_fn function, void *context) {
    CURLcode rc = curl.easy_setopt(handle, CURLOPT_OPENSOCKETFUNCTION, function);
    if (rc != CURLE_OK) return rc;
    return curl.easy_setopt(handle, CURLOPT_OPENSOCKETDATA, context);
}

CURLcode ccurl_get_long(CURL *handle, CURLINFO info, long *value) {
    return curl.easy_getinfo(handle, info, value);
}

CURLcode ccurl_get_offset(CURL *handle, CURLINFO info, curl_off_t *value) {
    return curl.easy_getinfo(handle, info, value);
}
