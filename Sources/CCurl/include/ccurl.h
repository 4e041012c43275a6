// Thin shim over libcurl (Debian: libcurl4-openssl-dev). curl_easy_setopt/getinfo are variadic, which Swift
// cannot call, so each option type gets one typed wrapper here; all policy lives in Swift.
#ifndef CCURL_H
#define CCURL_H
#include <curl/curl.h>
#include <stddef.h>

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
