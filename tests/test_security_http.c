/*
 * test_security_http.c — ids taken from URLs and bodies (session, checkpoint, model)
 * can never reach a file outside the state directory: path tricks ("..", "%2F",
 * "/", NUL, very long ids) are answered 404 (or 400 for a body field), and a
 * session file planted next to the state directory is neither loaded, exported,
 * overwritten nor deleted.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "http_client.h"
#include "util.h"

static test_server S;
static char *root, state_dir[4200], victim[4200];

static const char *demo(void)
{
    static char path[4096];
    snprintf(path, sizeof path, "%s/models/strata-demo", getenv("STRATA_ROOT") ? getenv("STRATA_ROOT") : ".");
    return path;
}

static int status_of(const char *method, const char *path, const char *body)
{
    http_response r;
    cr_assert_eq(http_do(S.port, method, path, body, body ? strlen(body) : 0, NULL, &r), 0);
    int st = r.status;
    cr_log_info("%s %.80s -> %d", method, path, st);
    http_response_free(&r);
    return st;
}

/* A real session file (exported from this server), planted outside the state dir. */
static void plant_victim(void)
{
    http_response r;
    cr_assert_eq(http_do(S.port, "POST", "/v1/sessions", "{\"prompt\":[1,1165,276]}", 23, NULL, &r), 0);
    cr_assert_eq(r.status, 201, "%s", r.body);
    json_t *j = json_loads(r.body, 0, NULL);
    char path[256];
    snprintf(path, sizeof path, "/v1/sessions/%s/export", json_string_value(json_object_get(j, "id")));
    json_decref(j);
    http_response_free(&r);
    cr_assert_eq(http_do(S.port, "GET", path, NULL, 0, NULL, &r), 0);
    cr_assert_eq(r.status, 200);
    snprintf(victim, sizeof victim, "%s/victim.safetensors", root);
    FILE *f = fopen(victim, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(r.body, 1, r.body_len, f), r.body_len);
    fclose(f);
    http_response_free(&r);
}

static void setup(void)
{
    root = make_temp_dir();
    snprintf(state_dir, sizeof state_dir, "%s/state", root);
    const char *args[] = {"--state-dir", state_dir, NULL};
    cr_assert_eq(server_start(&S, demo(), args), 0);
    plant_victim();
}

static void teardown(void)
{
    cr_assert_eq(server_stop(&S), 0, "clean exit (no sanitizer reports)");
    remove_tree(root);
    free(root);
}

static const char *const tricky_ids[] = {
    "..%2Fvictim", "..%2f..%2fvictim", "%2E%2E%2Fvictim", "../victim", "..", ".", "%00", "victim%00",
    "..%00%2Fvictim", "%2Fetc%2Fpasswd", "..%5Cvictim", "~", "victim.safetensors", NULL};

Test(security, url_ids_with_path_tricks_are_404_and_touch_nothing_outside, .init = setup, .fini = teardown,
     .timeout = 120)
{
    struct stat before, after;
    cr_assert_eq(stat(victim, &before), 0);
    static const char *const actions[] = {"", "/export", "/fork", "/checkpoints", "/rewind"};
    char path[16384];
    for (int i = 0; tricky_ids[i]; i++) {
        for (size_t a = 0; a < sizeof actions / sizeof actions[0]; a++) {
            snprintf(path, sizeof path, "/v1/sessions/%s%s", tricky_ids[i], actions[a]);
            const char *method = a == 0 || a == 1 ? "GET" : "POST";
            cr_expect_eq(status_of(method, path, a == 4 ? "{\"position\":0}" : NULL), 404, "%s %s", method, path);
        }
        snprintf(path, sizeof path, "/v1/sessions/%s", tricky_ids[i]);
        cr_expect_eq(status_of("DELETE", path, NULL), 404, "DELETE %s", path);
        snprintf(path, sizeof path, "/v1/models/%s", tricky_ids[i]);
        cr_expect_eq(status_of("GET", path, NULL), 404, "GET %s", path);
    }
    /* long ids: anything over the 64 characters of an id is a 404 */
    char *long_id = malloc(3001);
    memset(long_id, 'a', 3000);
    long_id[3000] = '\0';
    for (int len = 65; len <= 1000; len = len * 3) {
        snprintf(path, sizeof path, "/v1/sessions/%.*s", len, long_id);
        cr_expect_eq(status_of("GET", path, NULL), 404);
        cr_expect_eq(status_of("DELETE", path, NULL), 404);
        snprintf(path, sizeof path, "/v1/sessions/%.*s/export", len, long_id);
        cr_expect_eq(status_of("GET", path, NULL), 404);
    }
    snprintf(path, sizeof path, "/v1/sessions/%s", long_id);
    cr_expect_eq(status_of("DELETE", path, NULL), 404, "DELETE of a 3000-character id");
    cr_expect_eq(status_of("GET", path, NULL), 404, "GET of a 3000-character id");
    free(long_id);
    /* the planted file is untouched, and nothing new appeared beside the state dir */
    cr_assert_eq(stat(victim, &after), 0, "the file outside the state directory survives");
    cr_expect_eq(before.st_size, after.st_size);
    cr_expect_eq(before.st_mtim.tv_sec, after.st_mtim.tv_sec);
    cr_expect_eq(before.st_mtim.tv_nsec, after.st_mtim.tv_nsec);
    char *listing = NULL;
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "ls -A '%s'", root);
    cr_assert_eq(run_capture(cmd, &listing), 0);
    cr_expect_str_eq(listing, "state\nvictim.safetensors\n", "only the state dir and the planted file: %s", listing);
    free(listing);
}

Test(security, body_session_ids_with_path_tricks_are_refused, .init = setup, .fini = teardown, .timeout = 120)
{
    static const char *const ids[] = {"../victim", "..\\/victim", "/etc/passwd", "victim\\u0000x", "..", "", NULL};
    char body[512];
    for (int i = 0; ids[i]; i++) {
        snprintf(body, sizeof body, "{\"prompt\":[1,2],\"max_tokens\":1,\"session\":\"%s\"}", ids[i]);
        cr_expect_eq(status_of("POST", "/v1/completions", body), 400, "%s", body);
        snprintf(body, sizeof body, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":1,"
                 "\"session\":\"%s\"}", ids[i]);
        cr_expect_eq(status_of("POST", "/v1/chat/completions", body), 400, "%s", body);
        snprintf(body, sizeof body, "{\"prompt\":[1,2],\"hooks\":[\"logits\"],\"session\":\"%s\"}", ids[i]);
        int st = status_of("POST", "/v1/activations", body); /* 400: a NUL is not valid JSON here */
        cr_expect(st == 404 || st == 400, "%s -> %d", body, st);
    }
    struct stat st;
    cr_assert_eq(stat(victim, &st), 0, "the file outside the state directory survives");
}

/* The head of the answer to raw request bytes (what a client library would not send). */
static void raw_answer(const char *request, char *out, size_t cap)
{
    int fd = http_connect(S.port);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, request, strlen(request)), (ssize_t)strlen(request));
    size_t got = 0;
    ssize_t k;
    while (got + 1 < cap && (k = read(fd, out + got, cap - 1 - got)) > 0)
        got += (size_t)k;
    out[got] = '\0';
    close(fd);
}

/* A %00 in the URL is not decoded into a NUL that would end the path early (and
 * make "/v1/sessions/ID%00/../x" act on ID): such a URL names nothing. Framing that
 * could smuggle or stall is refused before any body is read: two Content-Lengths,
 * a transfer coding other than chunked, a declared body over the limit (no
 * "100 Continue" first). The Bearer scheme is case-insensitive. */
Test(security, nul_urls_and_request_framing, .init = setup, .fini = teardown, .timeout = 60)
{
    json_t *j = NULL;
    http_response r;
    cr_assert_eq(http_do(S.port, "POST", "/v1/sessions", "{}", 2, NULL, &r), 0);
    j = json_loads(r.body, 0, NULL);
    char id[96], path[256];
    snprintf(id, sizeof id, "%s", json_string_value(json_object_get(j, "id")));
    json_decref(j);
    http_response_free(&r);
    snprintf(path, sizeof path, "/v1/sessions/%s%%00/../../victim", id);
    cr_expect_eq(status_of("DELETE", path, NULL), 404);
    cr_expect_eq(status_of("POST", "/v1/completions%00x", "{\"prompt\":\"a\"}"), 404);
    snprintf(path, sizeof path, "/v1/sessions/%s", id);
    cr_expect_eq(status_of("GET", path, NULL), 200, "the session is still there");
    char answer[2048];
    raw_answer("POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Length: 16\r\nContent-Length: 3\r\nConnection: close\r\n"
               "\r\n{\"content\":\"a\"}", answer, sizeof answer);
    cr_expect_eq(strncmp(answer, "HTTP/1.1 400", 12), 0, "%s", answer);
    raw_answer("POST /tokenize HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\n", answer,
               sizeof answer);
    cr_expect_eq(strncmp(answer, "HTTP/1.1 501", 12), 0, "%s", answer);
    raw_answer("POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\nExpect: 100-continue\r\n"
               "Connection: close\r\n\r\n", answer, sizeof answer);
    cr_expect_eq(strncmp(answer, "HTTP/1.1 413", 12), 0, "at once, no 100 Continue: %s", answer);
    cr_expect_eq(status_of("GET", "/health", NULL), 200);
}
