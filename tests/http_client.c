/*
 * http_client.c — the integration tests' HTTP client and server harness.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "http_client.h"

static int connect_local(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

int http_connect(int port)
{
    return connect_local(port);
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);     /* a server that answered early and closed: EPIPE, no signal */
        if (w <= 0) {
            if (w < 0 && errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int send_request(int fd, const char *method, const char *path, const char *body, size_t len,
                        const char *extra)
{
    char head[4096];
    int n = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s"
                                        "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                     method, path, extra ? extra : "", body ? len : 0);
    if (n < 0 || (size_t)n >= sizeof head)
        return -1; /* a request line and headers over 4 KiB: not sent */
    return write_all(fd, head, (size_t)n) || (body && write_all(fd, body, len)) ? -1 : 0;
}

int http_send_only(int port, const char *method, const char *path, const char *body)
{
    int fd = connect_local(port);
    if (fd >= 0 && send_request(fd, method, path, body, body ? strlen(body) : 0, NULL) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Undo chunked transfer encoding in place; returns the new length. */
static size_t dechunk(char *b, size_t n)
{
    size_t in = 0, out = 0;
    while (in < n) {
        char *end;
        unsigned long size = strtoul(b + in, &end, 16);
        char *crlf = strstr(end, "\r\n");
        if (!crlf || size == 0)
            break;
        in = (size_t)(crlf + 2 - b);
        if (in + size > n)
            size = n - in;
        memmove(b + out, b + in, size);
        out += size;
        in += size + 2;
    }
    b[out] = '\0';
    return out;
}

int http_do(int port, const char *method, const char *path, const char *body, size_t body_len,
            const char *extra_headers, http_response *out)
{
    memset(out, 0, sizeof *out);
    int fd = connect_local(port);
    if (fd < 0)
        return -1;
    int unsent = send_request(fd, method, path, body, body_len, extra_headers);  /* the answer may have come early */
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 1 >= cap)
            buf = realloc(buf, cap *= 2);
        ssize_t r = read(fd, buf + len, cap - len - 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    if (unsent && !len) {
        free(buf);
        return -1;
    }
    buf[len] = '\0';
    char *sep = strstr(buf, "\r\n\r\n");
    if (!sep || sscanf(buf, "HTTP/1.%*d %d", &out->status) != 1) {
        free(buf);
        return -1;
    }
    *sep = '\0';
    out->headers = strdup(buf);
    size_t blen = len - (size_t)(sep + 4 - buf);
    out->body = malloc(blen + 1);
    memcpy(out->body, sep + 4, blen);
    out->body[blen] = '\0';
    out->body_len = strcasestr(out->headers, "transfer-encoding: chunked") ? dechunk(out->body, blen) : blen;
    free(buf);
    return 0;
}

void http_response_free(http_response *r)
{
    free(r->headers);
    free(r->body);
    memset(r, 0, sizeof *r);
}

int server_start(test_server *s, const char *model_dir, const char *const *extra)
{
    const char *bin = getenv("STRATA_SERVER");
    char path[] = "/tmp/strata-server-log-XXXXXX";
    int fd = mkstemp(path);
    if (!bin || fd < 0)
        return -1;
    unlink(path);
    const char *argv[32] = {bin, "--model", model_dir, "--port", "0", "--log-level", "info"};
    int argc = 7;
    for (int i = 0; extra && extra[i] && argc < 30; i++)
        argv[argc++] = extra[i];
    argv[argc] = NULL;
    s->pid = fork();
    if (s->pid == 0) {
        dup2(fd, 1); /* the test runner's pipes must not outlive a failed test */
        dup2(fd, 2);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    s->log_fd = fd;
    s->port = 0;
    for (int tries = 0; tries < 400 && !s->port; tries++) {
        char buf[65536];
        ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
        buf[n > 0 ? n : 0] = '\0';
        const char *at = strstr(buf, "listening on http://127.0.0.1:");
        if (at)
            s->port = atoi(at + strlen("listening on http://127.0.0.1:"));
        else if (waitpid(s->pid, NULL, WNOHANG) == s->pid)
            break;
        else
            usleep(50000);
    }
    return s->port ? 0 : -1;
}

int server_stop(test_server *s)
{
    int status = -1;
    kill(s->pid, SIGTERM);
    waitpid(s->pid, &status, 0);
    close(s->log_fd);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

double server_metric(int port, const char *name)
{
    http_response r;
    if (http_do(port, "GET", "/metrics", NULL, 0, NULL, &r) != 0)
        return -1;
    char key[128];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *at = strstr(r.body, key);
    double v = at ? strtod(at + strlen(key), NULL) : -1;
    http_response_free(&r);
    return v;
}
