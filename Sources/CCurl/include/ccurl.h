// Thin shim over libcurl (Debian: libcurl4; headers from libcurl4-openssl-dev at build time). The binary does not
// link libcurl: ccurl_load() loads libcurl.so.4 with dlopen at the first transfer, so the service does not map
// libcurl and the ~30 libraries it brings (GnuTLS, Kerberos, LDAP, SSH, ...) until something is downloaded
// (issue 18, docs/benchmarks.md). curl_easy_setopt/getinfo are variadic, which Swift cannot call, so each option
// type gets one typed wrapper here; all policy lives in Swift.
#ifndef CCURL_H
#define CCURL_H
#include <curl/curl.h>
#include <stddef.h>

/// Loads libcurl.so.4, resolves the functions below and runs curl_global_init, once per process (later calls
/// return the first outcome). NULL on success, else a message naming the library and the Debian package.
const char *ccurl_load(void);

// The libcurl functions meterext uses, through the pointers ccurl_load resolved (call only after it succeeded).
CURL *ccurl_easy_init(void);
void ccurl_easy_cleanup(CURL *handle);
CURLcode ccurl_easy_perform(CURL *handle);
const char *ccurl_easy_strerror(CURLcode code);
struct curl_slist *ccurl_slist_append(struct curl_slist *list, const char *string);
void ccurl_slist_free_all(struct curl_slist *list);

typedef size_t (*ccurl_write_fn)(char *data, size_t size, size_t count, void *context);
typedef int (*ccurl_progress_fn)(void *context, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow);

CURLcode ccurl_set_long(CURL *handle, CURLoption option, long value);
CURLcode ccurl_set_offset(CURL *handle, CURLoption option, curl_off_t value);
CURLcode ccurl_set_string(CURL *handle, CURLoption option, const char *value);
CURLcode ccurl_set_pointer(CURL *handle, CURLoption option, void *value);
CURLcode ccurl_set_write_function(CURL *handle, ccurl_write_fn function, void *context);
CURLcode ccurl_set_progress_function(CURL *handle, ccurl_progress_fn function, void *context);
typedef curl_socket_t (*ccurl_opensocket_fn)(void *context, curlsocktype purpose, struct curl_sockaddr *address);
CURLcode ccurl_set_opensocket_function(CURL *handle, ccurl_opensocket_fn function, void *context);
CURLcode ccurl_get_long(CURL *handle, CURLINFO info, long *value);
CURLcode ccurl_get_offset(CURL *handle, CURLINFO info, curl_off_t *value);

#endif
