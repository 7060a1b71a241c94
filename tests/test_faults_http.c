/*
 * test_faults_http.c — the server under faults: clients that send headers or a body
 * and stall (slowloris) are closed after --connection-timeout while others are
 * served; connections over --connection-limit are refused and the server serves
 * again once they go; a read-only state directory is a clear logged error, the
 * server keeps serving and nothing persisted is lost; a session file corrupted on
 * disk is reported lost (renamed .corrupt) while the other sessions load.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "http_client.h"
#include "util.h"

static test_server S;
static char *state_dir;

static const char *demo(void)
{
    static char path[4096];
    snprintf(path, sizeof path, "%s/models/strata-demo", getenv("STRATA_ROOT") ? getenv("STRATA_ROOT") : ".");
    return path;
}

static void start(const char *const *extra)
{
    const char *args[16] = {"--state-dir", state_dir};
    int n = 2;
    for (int i = 0; extra && extra[i] && n < 15; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    cr_assert_eq(server_start(&S, demo(), args), 0);
}

static void setup(void) { state_dir = make_temp_dir(); }

static void teardown(void)
{
    if (S.pid > 0)
        cr_expect_eq(server_stop(&S), 0, "clean exit (no sanitizer reports)");
    remove_tree(state_dir);
    free(state_dir);
}

static int status_of(const char *method, const char *path, const char *body)
{
    http_response r;
    if (http_do(S.port, method, path, body, body ? strlen(body) : 0, NULL, &r) != 0)
        return -1;
    int st = r.status;
    http_response_free(&r);
    return st;
}

/* Whether the server closed fd (read gives EOF or a reset) within ms, without answering. */
static int closed_within(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, ms) <= 0)
        return 0;
    char c;
    return read(fd, &c, 1) <= 0;
}

/* The server's log so far. */
static char *server_log(void)
{
    static char buf[1 << 16];
    ssize_t n = pread(S.log_fd, buf, sizeof buf - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

/* A new session prefilled with prompt; *persisted (may be NULL): what the answer says
 * of its save. */
static char *create_session_saved(const char *prompt, int *persisted)
{
    char body[256];
    snprintf(body, sizeof body, "{\"prompt\":\"%s\"}", prompt);
    http_response r;
    cr_assert_eq(http_do(S.port, "POST", "/v1/sessions", body, strlen(body), NULL, &r), 0);
    cr_assert_eq(r.status, 201, "%s", r.body);
    json_t *j = json_loads(r.body, 0, NULL);
    char *id = strdup(json_string_value(json_object_get(j, "id")));
    if (persisted)
        *persisted = json_is_true(json_object_get(j, "persisted"));
    json_decref(j);
    http_response_free(&r);
    return id;
}

static char *create_session(const char *prompt)
{
    return create_session_saved(prompt, NULL);
}

static int continue_session(const char *id)
{
    char body[256];
    snprintf(body, sizeof body, "{\"prompt\":\"In the beginning God\",\"max_tokens\":2,\"session\":\"%s\"}", id);
    return status_of("POST", "/v1/completions", body);
}

Test(faults, slowloris_headers_and_bodies_are_cut_by_the_connection_timeout, .init = setup, .fini = teardown,
     .timeout = 60)
{
    const char *args[] = {"--connection-timeout", "1", NULL};
    start(args);
    int headers = http_connect(S.port), body = http_connect(S.port);
    cr_assert(headers >= 0 && body >= 0);
    const char *h = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
    const char *b = "POST /tokenize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    "Content-Length: 100\r\n\r\n{\"content\":";
    cr_assert_eq(write(headers, h, strlen(h)), (ssize_t)strlen(h));
    cr_assert_eq(write(body, b, strlen(b)), (ssize_t)strlen(b));
    /* others are served while the two stall */
    cr_expect_eq(status_of("GET", "/health", NULL), 200);
    cr_expect(closed_within(headers, 5000), "a client stalled in its headers is closed");
    cr_expect(closed_within(body, 5000), "a client stalled in its body is closed");
    close(headers);
    close(body);
    cr_expect_eq(status_of("GET", "/health", NULL), 200, "the server keeps serving");
    cr_expect_eq(status_of("POST", "/tokenize", "{\"content\":\"In the beginning\"}"), 200);
}

Test(faults, connections_over_the_limit_are_refused_then_served_again, .init = setup, .fini = teardown,
     .timeout = 60)
{
    const char *args[] = {"--connection-limit", "4", "--connection-timeout", "20", NULL};
    start(args);
    enum { HELD = 4, EXTRA = 6 };
    int held[HELD], extra[EXTRA];
    for (int i = 0; i < HELD; i++) {
        held[i] = http_connect(S.port);
        cr_assert_geq(held[i], 0);
        cr_assert_eq(write(held[i], "GET /health HTTP/1.1\r\n", 22), 22); /* open, unfinished */
    }
    usleep(300000);
    int refused = 0;
    for (int i = 0; i < EXTRA; i++) {
        extra[i] = http_connect(S.port);
        if (extra[i] < 0) {
            refused++;
            continue;
        }
        const char *req = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        if (write(extra[i], req, strlen(req)) < 0 || closed_within(extra[i], 2000))
            refused++;
    }
    cr_expect_eq(refused, EXTRA, "every connection over the limit is refused (%d of %d)", refused, EXTRA);
    for (int i = 0; i < HELD; i++)
        close(held[i]);
    for (int i = 0; i < EXTRA; i++)
        if (extra[i] >= 0)
            close(extra[i]);
    int st = -1;
    for (int tries = 0; tries < 50 && st != 200; tries++) {
        st = status_of("GET", "/health", NULL);
        if (st != 200)
            usleep(100000);
    }
    cr_expect_eq(st, 200, "served again once the connections are gone");
}

/* Make dir unwritable even for root (immutable attribute), or by its mode; 0 when
 * neither works here. */
static int make_read_only(const char *dir, int on)
{
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "chattr %ci '%s' 2>/dev/null", on ? '+' : '-', dir);
    char *out = NULL;
    int rc = run_capture(cmd, &out);
    free(out);
    if (rc != 0)
        chmod(dir, on ? 0500 : 0700);
    if (!on)
        return 1;
    char probe[4400];
    snprintf(probe, sizeof probe, "%s/probe", dir);
    FILE *f = fopen(probe, "w");
    if (f) {
        fclose(f);
        unlink(probe);
        return 0;
    }
    return 1;
}

Test(faults, a_read_only_state_dir_is_logged_and_loses_nothing_persisted, .init = setup, .fini = teardown,
     .timeout = 90)
{
    start(NULL);
    char *a = create_session("In the beginning");
    char path[4400];
    snprintf(path, sizeof path, "%s/%s.safetensors", state_dir, a);
    struct stat before, after;
    cr_assert_eq(stat(path, &before), 0, "session %s persisted", a);
    if (!make_read_only(state_dir, 1)) {
        free(a);
        cr_skip_test("cannot make a directory read-only here (no chattr, running as root)");
    }
    /* writes fail: the server says so (the log, and "persisted": false in the answers),
     * and goes on serving from memory; a delete that cannot remove the file is refused */
    int persisted = 1;
    char *b = create_session_saved("And God said", &persisted);
    cr_expect(!persisted, "the answer says the session is not on disk");
    cr_expect_eq(continue_session(a), 200);
    cr_expect_eq(continue_session(b), 200);
    char sp[256];
    snprintf(sp, sizeof sp, "/v1/sessions/%s", a);
    cr_expect_eq(status_of("DELETE", sp, NULL), 500, "its file cannot go: the session stays");
    cr_expect_eq(status_of("GET", sp, NULL), 200);
    cr_expect_eq(status_of("GET", "/health", NULL), 200);
    cr_expect(strstr(server_log(), "not persisted") != NULL, "a clear error is logged:\n%s", server_log());
    cr_assert_eq(stat(path, &after), 0, "the persisted file is still there");
    cr_expect_eq(after.st_size, before.st_size);
    cr_expect_eq(after.st_mtim.tv_nsec, before.st_mtim.tv_nsec, "and untouched");
    make_read_only(state_dir, 0);
    /* kill -9: what was persisted before the fault comes back */
    kill(S.pid, SIGKILL);
    waitpid(S.pid, NULL, 0);
    close(S.log_fd);
    start(NULL);
    snprintf(path, sizeof path, "/v1/sessions/%s", a);
    cr_expect_eq(status_of("GET", path, NULL), 200, "session %s survived", a);
    cr_expect_eq(continue_session(a), 200);
    free(a);
    free(b);
}

Test(faults, a_corrupted_session_file_is_reported_lost_and_the_others_load, .init = setup, .fini = teardown,
     .timeout = 90)
{
    start(NULL);
    char *a = create_session("In the beginning"), *b = create_session("And God said");
    cr_assert_eq(server_stop(&S), 0);
    char path[4400];
    snprintf(path, sizeof path, "%s/%s.safetensors", state_dir, a);
    FILE *f = fopen(path, "r+b");
    cr_assert_not_null(f);
    fseek(f, -64, SEEK_END); /* a byte of state data, not the header */
    int c = fgetc(f);
    fseek(f, -64, SEEK_END);
    fputc(c ^ 0x5a, f);
    fclose(f);
    start(NULL);
    char url[256];
    snprintf(url, sizeof url, "/v1/sessions/%s", a);
    cr_expect_eq(status_of("GET", url, NULL), 404, "the corrupted session is lost");
    cr_expect(strstr(server_log(), "lost") != NULL, "and reported:\n%s", server_log());
    char bad[4500];
    snprintf(bad, sizeof bad, "%s.corrupt", path);
    struct stat st;
    cr_expect_eq(stat(bad, &st), 0, "the file is kept aside as .corrupt");
    snprintf(url, sizeof url, "/v1/sessions/%s", b);
    cr_expect_eq(status_of("GET", url, NULL), 200, "the other session loads");
    cr_expect_eq(continue_session(b), 200);
    free(a);
    free(b);
}

/* A full disk: the state directory on a 1.2 MB tmpfs holds one demo session file
 * (~0.9 MB); rewriting it needs room for the new copy beside the old one. */
static int mount_small(const char *dir, int on)
{
    char cmd[4400];
    if (on)
        snprintf(cmd, sizeof cmd, "mount -t tmpfs -o size=1200k strata-test '%s' 2>/dev/null", dir);
    else
        snprintf(cmd, sizeof cmd, "umount '%s' 2>/dev/null", dir);
    return system(cmd) == 0;
}

Test(faults, a_full_disk_is_logged_and_loses_nothing_persisted, .init = setup, .fini = teardown, .timeout = 90)
{
    if (!mount_small(state_dir, 1))
        cr_skip_test("cannot mount a small tmpfs here (needs root)");
    start(NULL);
    char *a = create_session("In the beginning");
    char path[4400];
    snprintf(path, sizeof path, "%s/%s.safetensors", state_dir, a);
    struct stat before, after;
    int persisted = stat(path, &before) == 0;
    cr_expect(persisted, "the first session fits");
    cr_expect_eq(continue_session(a), 200, "the disk is full: the request is still served");
    char *b = create_session("And God said");
    cr_expect_eq(continue_session(b), 200);
    cr_expect_eq(status_of("GET", "/health", NULL), 200);
    cr_expect(strstr(server_log(), "not persisted") != NULL, "a clear error is logged:\n%s", server_log());
    if (persisted) {
        cr_expect_eq(stat(path, &after), 0, "the persisted file is still there");
        cr_expect_eq(after.st_size, before.st_size, "and whole");
    }
    cr_expect_eq(server_stop(&S), 0);
    S.pid = 0;
    /* what was persisted loads after a restart */
    start(NULL);
    char sp[256];
    snprintf(sp, sizeof sp, "/v1/sessions/%s", a);
    cr_expect_eq(status_of("GET", sp, NULL), 200);
    cr_expect_eq(server_stop(&S), 0);
    S.pid = 0;
    mount_small(state_dir, 0);
    free(a);
    free(b);
}

/* A client that trickles its headers or body, a byte now and then, never idle for
 * the timeout, is still cut once sending its request has taken longer than it. */
Test(faults, slowloris_trickling_is_cut_too, .init = setup, .fini = teardown, .timeout = 60)
{
    const char *args[] = {"--connection-timeout", "1", NULL};
    start(args);
    int fd = http_connect(S.port);
    cr_assert_geq(fd, 0);
    const char *h = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    cr_assert_eq(write(fd, h, strlen(h)), (ssize_t)strlen(h));
    int closed = 0;
    for (int i = 0; i < 40 && !closed; i++) {       /* a header line every 0.3 s, for up to 12 s */
        closed = closed_within(fd, 300);
        if (!closed)
            closed = send(fd, "X: y\r\n", 6, MSG_NOSIGNAL) != 6;
    }
    cr_expect(closed, "a trickling client is closed");
    close(fd);
    cr_expect_eq(status_of("GET", "/health", NULL), 200, "the server keeps serving");
}

/* A body that keeps coming at a useful rate (here 100 KB/s for 3 s, with a 1 s
 * timeout) is given the time it needs: a large session import over a slow link is
 * not a slowloris. */
Test(faults, a_steady_upload_outlasts_the_connection_timeout, .init = setup, .fini = teardown, .timeout = 60)
{
    const char *args[] = {"--connection-timeout", "1", NULL};
    start(args);
    size_t n = 300000;
    char *body = malloc(n + 32);
    int len = snprintf(body, 32, "{\"content\":\"");
    memset(body + len, 'a', n);
    len += (int)n;
    len += snprintf(body + len, 32, "\"}");
    int fd = http_connect(S.port);
    char head[256];
    snprintf(head, sizeof head, "POST /tokenize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n"
             "Connection: close\r\n\r\n", len);
    cr_assert_eq(send(fd, head, strlen(head), MSG_NOSIGNAL), (ssize_t)strlen(head));
    int sent_all = 1;
    for (int off = 0; off < len && sent_all; off += 10000) {
        int k = len - off < 10000 ? len - off : 10000;
        sent_all = send(fd, body + off, (size_t)k, MSG_NOSIGNAL) == k;
        usleep(100000);
    }
    cr_expect(sent_all, "the upload was not cut");
    char answer[64] = "";
    ssize_t got = read(fd, answer, sizeof answer - 1);
    answer[got > 0 ? got : 0] = '\0';
    cr_expect_eq(strncmp(answer, "HTTP/1.1 200", 12), 0, "answered: %s", answer);
    close(fd);
    free(body);
}
