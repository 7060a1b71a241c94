/*
 * http_client.h — a minimal HTTP/1.1 client for the integration tests, plus a
 * harness that starts the real strata-server on 127.0.0.1 with a free port.
 */
#ifndef STRATA_TESTS_HTTP_CLIENT_H
#define STRATA_TESTS_HTTP_CLIENT_H

#include <stddef.h>
#include <sys/types.h>

typedef struct http_response {
    int status;
    char *headers;      /* raw header block */
    char *body;         /* de-chunked, NUL-terminated */
    size_t body_len;
} http_response;

/* One request on a fresh connection (Connection: close). extra_headers: "K: V\r\n"... */
int http_do(int port, const char *method, const char *path, const char *body, size_t body_len,
            const char *extra_headers, http_response *out);
void http_response_free(http_response *r);

/* A connection to 127.0.0.1:port, nothing sent (fd, or -1). */
int http_connect(int port);
/* Open a connection and send a request without reading the answer (returns fd). */
int http_send_only(int port, const char *method, const char *path, const char *body);

typedef struct test_server {
    pid_t pid;
    int port;
    int log_fd;         /* the server's stderr */
} test_server;

/* The value of the server's /metrics line "name value", or -1 when there is none. */
double server_metric(int port, const char *name);

/* Start build/strata-server with --port 0 and extra args (NULL-terminated). */
int server_start(test_server *s, const char *model_dir, const char *const *extra_args);
/* SIGTERM and wait; returns the exit status. */
int server_stop(test_server *s);

#endif
