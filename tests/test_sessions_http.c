/*
 * test_sessions_http.c — sessions through the real server: continuing equals a
 * stateless run, forks and rewinds are exact, export/import moves a session between
 * servers, a 10-turn chat never starts over, kill -9 loses nothing persisted, and
 * a session has one writer at a time.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static void start(void)
{
    const char *args[] = {"--state-dir", state_dir, NULL};
    cr_assert_eq(server_start(&S, demo(), args), 0);
}

static void setup(void)
{
    state_dir = make_temp_dir();
    start();
}

static void teardown(void)
{
    cr_assert_eq(server_stop(&S), 0, "clean exit (no sanitizer reports)");
    remove_tree(state_dir);
    free(state_dir);
}

static json_t *req(const char *method, const char *path, const char *body, int want)
{
    http_response r;
    cr_assert_eq(http_do(S.port, method, path, body, body ? strlen(body) : 0, NULL, &r), 0);
    cr_assert_eq(r.status, want, "%s %s %s -> %d %s", method, path, body ? body : "", r.status, r.body);
    json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
    http_response_free(&r);
    return j;
}

static char *new_session(const char *prompt_json)
{
    char body[4096];
    snprintf(body, sizeof body, "{\"prompt\":%s}", prompt_json);
    json_t *j = req("POST", "/v1/sessions", body, 201);
    char *id = strdup(json_string_value(json_object_get(j, "id")));
    json_decref(j);
    return id;
}

/* A greedy completion with logprobs and `extra` fields (",..." or ""), on a session
 * or not; returns the choice JSON (text + logprobs) as a string for exact comparison. */
static char *complete_with(const char *session, const char *prompt_json, int max_tokens, const char *extra,
                           int *cached)
{
    char body[8192];
    snprintf(body, sizeof body, "{\"prompt\":%s,\"max_tokens\":%d,\"temperature\":0,\"logprobs\":5%s%s%s%s}",
             prompt_json, max_tokens, extra, session ? ",\"session\":\"" : "", session ? session : "",
             session ? "\"" : "");
    json_t *j = req("POST", "/v1/completions", body, 200);
    json_t *c = json_array_get(json_object_get(j, "choices"), 0);
    if (cached)
        *cached = (int)json_integer_value(json_object_get(
            json_object_get(json_object_get(j, "usage"), "prompt_tokens_details"), "cached_tokens"));
    json_object_del(c, "index");
    char *s = json_dumps(c, JSON_SORT_KEYS | JSON_COMPACT);
    json_decref(j);
    return s;
}

static char *complete(const char *session, const char *prompt_json, int max_tokens, int *cached)
{
    return complete_with(session, prompt_json, max_tokens, "", cached);
}

TestSuite(sessions, .init = setup, .fini = teardown, .timeout = 120);

Test(sessions, a_continued_session_equals_a_stateless_run)
{
    char *id = new_session("\"In the beginning God created\"");
    int cached;
    char *on = complete(id, "\"In the beginning God created the heaven and the earth.\"", 12, &cached);
    char *off = complete(NULL, "\"In the beginning God created the heaven and the earth.\"", 12, NULL);
    cr_assert_str_eq(on, off, "same text and logprobs");
    cr_assert_geq(cached, 5, "the prefilled prompt was reused");
    free(on);
    free(off);
    free(id);
}

/* The repetition penalty counts the tokens the session already holds, as a
 * stateless run counts its whole prompt. */
Test(sessions, a_continued_session_samples_with_penalties_as_a_stateless_run)
{
    const char *prompt = "\"And God said, Let there be light: and there was light. And God saw the light, that it was "
                         "good: and God divided the light from the darkness. And God called\"";
    const char *penalty = ",\"repetition_penalty\":1.6";
    char *id = new_session("\"And God said, Let there be light: and there was light. And God saw the light, that it "
                           "was good: and God divided\"");
    int cached;
    char *on = complete_with(id, prompt, 16, penalty, &cached);
    char *off = complete_with(NULL, prompt, 16, penalty, NULL);
    cr_assert_str_eq(on, off, "same text and logprobs");
    cr_assert_geq(cached, 20, "the session's tokens were reused");
    free(on);
    free(off);
    free(id);
}

Test(sessions, fork_then_both_ways_equals_two_independent_runs)
{
    char *id = new_session("\"And God said, Let there be light\"");
    json_t *f = req("POST", "/v1/sessions/x/fork", NULL, 404);
    json_decref(f);
    char path[256];
    snprintf(path, sizeof path, "/v1/sessions/%s/fork", id);
    f = req("POST", path, NULL, 201);
    const char *fid = json_string_value(json_object_get(f, "id"));
    char *a = complete(id, "\"And God said, Let there be light: and there was light.\"", 8, NULL);
    char *b = complete(fid, "\"And God said, Let there be light, and the waters\"", 8, NULL);
    char *a0 = complete(NULL, "\"And God said, Let there be light: and there was light.\"", 8, NULL);
    char *b0 = complete(NULL, "\"And God said, Let there be light, and the waters\"", 8, NULL);
    cr_assert_str_eq(a, a0);
    cr_assert_str_eq(b, b0);
    free(a);
    free(b);
    free(a0);
    free(b0);
    json_decref(f);
    free(id);
}

Test(sessions, rewind_then_continue_equals_a_fresh_run_of_that_prefix)
{
    /* [1,1165,276,2102] = <s> In the beginning */
    char *id = new_session("[1,1165,276,2102,276,2102,276,2102,276,2102]");
    char path[256], body[64];
    snprintf(path, sizeof path, "/v1/sessions/%s/rewind", id);
    snprintf(body, sizeof body, "{\"position\":4}");
    json_t *j = req("POST", path, body, 200);
    cr_assert_eq(json_integer_value(json_object_get(j, "n_tokens")), 4);
    json_decref(j);
    json_decref(req("POST", path, "{\"position\":99}", 400));
    int cached;
    char *on = complete(id, "[1,1165,276,2102,7,8,9]", 6, &cached);
    char *off = complete(NULL, "[1,1165,276,2102,7,8,9]", 6, NULL);
    cr_assert_str_eq(on, off);
    cr_assert_eq(cached, 4);
    free(on);
    free(off);
    free(id);
}

Test(sessions, export_import_on_another_server_continues_identically)
{
    char *id = new_session("\"The LORD is my shepherd;\"");
    char path[256];
    snprintf(path, sizeof path, "/v1/sessions/%s/export", id);
    http_response r;
    cr_assert_eq(http_do(S.port, "GET", path, NULL, 0, NULL, &r), 0);
    cr_assert_eq(r.status, 200);
    char *expected = complete(id, "\"The LORD is my shepherd; I shall not want.\"", 10, NULL);
    /* another server, another state directory */
    test_server first = S;
    char *dir2 = make_temp_dir();
    const char *args[] = {"--state-dir", dir2, NULL};
    cr_assert_eq(server_start(&S, demo(), args), 0);
    http_response imp;
    cr_assert_eq(http_do(S.port, "POST", "/v1/sessions/import", r.body, r.body_len,
                         "Content-Type: application/octet-stream\r\n", &imp), 0);
    cr_assert_eq(imp.status, 201, "%s", imp.body);
    json_t *j = json_loads(imp.body, 0, NULL);
    const char *nid = json_string_value(json_object_get(j, "id"));
    char *got = complete(nid, "\"The LORD is my shepherd; I shall not want.\"", 10, NULL);
    cr_assert_str_eq(got, expected);
    /* a corrupted file is refused */
    r.body[r.body_len - 3] ^= 1;
    http_response bad;
    cr_assert_eq(http_do(S.port, "POST", "/v1/sessions/import", r.body, r.body_len, NULL, &bad), 0);
    cr_assert_eq(bad.status, 400, "%s", bad.body);
    http_response_free(&bad);
    json_decref(j);
    http_response_free(&imp);
    http_response_free(&r);
    free(got);
    free(expected);
    server_stop(&S);
    remove_tree(dir2);
    free(dir2);
    S = first;
    free(id);
}

Test(sessions, a_ten_turn_chat_never_starts_over)
{
    char *id = new_session("[1]");
    json_t *messages = json_array();
    json_array_append_new(messages, json_pack("{s:s,s:s}", "role", "system", "content", "You speak as the scriptures."));
    const char *questions[] = {"Who made the heaven?", "And the earth?", "What of the waters?", "Who is the LORD?",
                               "What did Moses say?", "Where is Israel?", "Who is David?", "What is the law?",
                               "Who are the people?", "What is the end?"};
    int prev_prompt = 0;
    for (int turn = 0; turn < 10; turn++) {
        json_array_append_new(messages, json_pack("{s:s,s:s}", "role", "user", "content", questions[turn]));
        json_t *body = json_pack("{s:O,s:i,s:f,s:s}", "messages", messages, "max_tokens", 12, "temperature", 0.0,
                                 "session", id);
        char *text = json_dumps(body, JSON_COMPACT);
        json_t *j = req("POST", "/v1/chat/completions", text, 200);
        json_t *usage = json_object_get(j, "usage");
        int prompt = (int)json_integer_value(json_object_get(usage, "prompt_tokens"));
        int cached = (int)json_integer_value(json_object_get(json_object_get(usage, "prompt_tokens_details"), "cached_tokens"));
        if (turn > 0) {
            cr_assert_geq(cached, prev_prompt - 8, "turn %d: cached %d of the previous %d", turn, cached, prev_prompt);
            cr_assert_gt(cached, 0, "turn %d re-processed from zero", turn);
        }
        prev_prompt = prompt;
        const char *reply = json_string_value(json_object_get(
            json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message"), "content"));
        json_array_append_new(messages, json_pack("{s:s,s:s}", "role", "assistant", "content", reply));
        json_decref(j);
        json_decref(body);
        free(text);
    }
    json_decref(messages);
    free(id);
}

Test(sessions, kill_9_then_restart_keeps_every_persisted_session)
{
    char *a = new_session("\"In the beginning\"");
    char *b = new_session("\"And Jesus said unto them,\"");
    char *b_next = complete(b, "\"And Jesus said unto them, Go\"", 6, NULL);
    /* a long generation on a, then kill -9 in the middle of it */
    char body[512];
    snprintf(body, sizeof body, "{\"prompt\":\"In the beginning God\",\"max_tokens\":3000,\"ignore_eos\":true,"
                                "\"session\":\"%s\",\"stream\":true}", a);
    int fd = http_send_only(S.port, "POST", "/v1/completions", body);
    char buf[2048];
    cr_assert_gt(read(fd, buf, sizeof buf), 0);
    kill(S.pid, SIGKILL);
    waitpid(S.pid, NULL, 0);
    close(fd);
    close(S.log_fd);
    start();
    char path[256];
    snprintf(path, sizeof path, "/v1/sessions/%s", a);
    json_t *ja = req("GET", path, NULL, 200);
    cr_assert_eq(json_integer_value(json_object_get(ja, "n_tokens")), 4, "a is at its last persisted state");
    json_decref(ja);
    /* b continues exactly as a fresh run of its tokens would */
    char *again = complete(b, "\"And Jesus said unto them, Go\"", 6, NULL);
    cr_assert_str_eq(again, b_next);
    char *ref = complete(NULL, "\"And Jesus said unto them, Go\"", 6, NULL);
    cr_assert_str_eq(again, ref);
    free(again);
    free(ref);
    free(b_next);
    free(a);
    free(b);
}

Test(sessions, one_writer_at_a_time)
{
    char *id = new_session("\"In the beginning\"");
    char body[512];
    snprintf(body, sizeof body, "{\"prompt\":\"In the beginning God\",\"max_tokens\":200,\"ignore_eos\":true,"
                                "\"session\":\"%s\",\"stream\":true}", id);
    int fd = http_send_only(S.port, "POST", "/v1/completions", body);
    char buf[4096];
    cr_assert_gt(read(fd, buf, sizeof buf), 0);
    char second[512];
    snprintf(second, sizeof second, "{\"prompt\":\"In the beginning\",\"max_tokens\":2,\"session\":\"%s\"}", id);
    json_t *j = req("POST", "/v1/completions", second, 409);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "error"), "code")), "session_busy");
    json_decref(j);
    char path[256];
    snprintf(path, sizeof path, "/v1/sessions/%s", id);
    json_decref(req("DELETE", path, NULL, 409));
    while (read(fd, buf, sizeof buf) > 0)
        ;
    close(fd);
    json_t *s = NULL;
    for (int i = 0; i < 100; i++) {
        json_decref(s);
        s = req("GET", path, NULL, 200);
        if (!json_is_true(json_object_get(s, "busy")))
            break;
        usleep(20000);
    }
    cr_assert_eq(json_integer_value(json_object_get(s, "n_tokens")), 5 + 199, "prompt + generated minus the last");
    json_decref(s);
    int cached;
    char *on = complete(id, "\"In the beginning God\"", 3, &cached);
    char *off = complete(NULL, "\"In the beginning God\"", 3, NULL);
    cr_assert_str_eq(on, off, "nothing was corrupted");
    free(on);
    free(off);
    free(id);
}

/* Send method path body for session id with its save blocked: the file's temporary
 * path is a FIFO, so the save blocks writing into it. Meanwhile other clients are
 * answered and the session shows busy; once the FIFO is drained (fsync on a FIFO
 * fails: "not persisted" is logged), the request gets its answer, want_status. */
static void with_save_blocked(const char *id, const char *method, const char *path, const char *body,
                              int want_status)
{
    char fifo[4400], info[256], want[32], buf[65536];
    snprintf(fifo, sizeof fifo, "%s/%s.safetensors.tmp", state_dir, id);
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    int fd = http_send_only(S.port, method, path, body);
    int rd = open(fifo, O_RDONLY);     /* returns once the save has opened it to write */
    cr_assert_geq(rd, 0);
    json_t *health = req("GET", "/health", NULL, 200);
    cr_assert_str_eq(json_string_value(json_object_get(health, "status")), "ok");
    json_decref(health);
    free(complete(NULL, "\"And God said\"", 3, NULL));
    snprintf(info, sizeof info, "/v1/sessions/%s", id);
    json_t *during = req("GET", info, NULL, 200);
    cr_assert(json_is_true(json_object_get(during, "busy")), "%s %s: the session is busy while it is saved", method,
              path);
    json_decref(during);
    size_t drained = 0;
    for (ssize_t n; (n = read(rd, buf, sizeof buf)) > 0;)
        drained += (size_t)n;
    close(rd);
    cr_assert_gt(drained, 100000, "the save wrote the whole session into the FIFO");
    size_t got = 0;
    for (ssize_t n; (n = read(fd, buf + got, sizeof buf - 1 - got)) > 0;)
        got += (size_t)n;
    close(fd);
    buf[got] = '\0';
    snprintf(want, sizeof want, "HTTP/1.1 %d", want_status);
    cr_assert(strstr(buf, want), "%s %s is answered %d: %s", method, path, want_status, buf);
    unlink(fifo);
    json_t *after = req("GET", info, NULL, 200);
    cr_assert(json_is_false(json_object_get(after, "busy")));
    json_decref(after);
}

/* A session's save runs beside the loop that serves every client: a generation's,
 * a checkpoint's and a committed activations run's alike. */
Test(sessions, a_session_being_saved_holds_up_no_other_client)
{
    char *id = new_session("\"In the beginning\"");
    char body[512], path[256];
    snprintf(body, sizeof body, "{\"prompt\":\"In the beginning God\",\"max_tokens\":2,\"session\":\"%s\"}", id);
    with_save_blocked(id, "POST", "/v1/completions", body, 200);
    snprintf(path, sizeof path, "/v1/sessions/%s/checkpoints", id);
    with_save_blocked(id, "POST", path, NULL, 201);
    snprintf(body, sizeof body, "{\"prompt\":[2102],\"hooks\":[\"logits\"],\"session\":\"%s\",\"commit\":true}", id);
    with_save_blocked(id, "POST", "/v1/activations", body, 200);
    char log[65536];
    ssize_t n = pread(S.log_fd, log, sizeof log - 1, 0);
    log[n > 0 ? n : 0] = '\0';
    cr_assert(strstr(log, "not persisted"), "the failed saves are logged:\n%s", log);
    snprintf(path, sizeof path, "/v1/sessions/%s", id);
    json_t *s = req("GET", path, NULL, 200);
    cr_assert_eq(json_integer_value(json_object_get(s, "n_tokens")), 5 + 1 + 1, "the committed run's token joined");
    json_decref(s);
    char *again = complete(id, "\"In the beginning God\"", 3, NULL), *fresh = complete(NULL, "\"In the beginning God\"", 3, NULL);
    cr_assert_str_eq(again, fresh, "the session goes on from memory");
    free(again);
    free(fresh);
    free(id);
}

Test(session_limits, idle_sessions_move_to_disk_and_come_back, .timeout = 60)
{
    state_dir = make_temp_dir();
    const char *args[] = {"--state-dir", state_dir, "--max-sessions", "2", NULL};
    cr_assert_eq(server_start(&S, demo(), args), 0);
    char *a = new_session("\"In the beginning\"");
    char *b = new_session("\"And God said\"");
    char file[2][4200];
    struct stat saved[2], now;
    for (int k = 0; k < 2; k++) {
        snprintf(file[k], sizeof file[k], "%s/%s.safetensors", state_dir, k ? b : a);
        cr_assert_eq(stat(file[k], &saved[k]), 0);
    }
    char *c = new_session("\"The LORD is\"");
    json_t *list = req("GET", "/v1/sessions", NULL, 200);
    int resident = 0;
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(list, "data"), i, s) {
        resident += json_is_true(json_object_get(s, "resident"));
        int k = !strcmp(json_string_value(json_object_get(s, "id")), a) ? 0 : 1;
        if (json_is_true(json_object_get(s, "resident")))
            continue;
        cr_assert_eq(k, 0, "the least recently used (created first, the same second) went to disk");
        cr_assert_eq(stat(file[k], &now), 0);
        cr_assert(now.st_ino == saved[k].st_ino && now.st_mtim.tv_sec == saved[k].st_mtim.tv_sec &&
                      now.st_mtim.tv_nsec == saved[k].st_mtim.tv_nsec,
                  "the evicted session was on disk already: its file was not written again");
    }
    cr_assert_eq(json_array_size(json_object_get(list, "data")), 3);
    cr_assert_eq(resident, 2, "the least recently used went to disk");
    json_decref(list);
    char *on = complete(a, "\"In the beginning God created\"", 5, NULL);
    char *off = complete(NULL, "\"In the beginning God created\"", 5, NULL);
    cr_assert_str_eq(on, off, "the evicted session came back intact");
    free(on);
    free(off);
    cr_assert_eq(server_stop(&S), 0);
    /* without a state directory there is nowhere to evict to: 429 */
    const char *args2[] = {"--max-sessions", "2", NULL};
    cr_assert_eq(server_start(&S, demo(), args2), 0);
    free(new_session("[1,2]"));
    free(new_session("[1,3]"));
    json_t *j = req("POST", "/v1/sessions", "{}", 429);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "error"), "code")), "too_many_sessions");
    json_decref(j);
    cr_assert_eq(server_stop(&S), 0);
    /* a TTL drops idle sessions */
    const char *args3[] = {"--session-ttl", "1", NULL};
    cr_assert_eq(server_start(&S, demo(), args3), 0);
    char *t = new_session("[1,2]");
    char path[256];
    snprintf(path, sizeof path, "/v1/sessions/%s", t);
    int status = 200;
    for (int i = 0; i < 100 && status == 200; i++) { /* expiry runs once a second: allow for a slow build */
        usleep(200000);
        http_response r;
        cr_assert_eq(http_do(S.port, "GET", path, NULL, 0, NULL, &r), 0);
        status = r.status;
        http_response_free(&r);
    }
    cr_assert_eq(status, 404, "the idle session expired");
    cr_assert_eq(server_stop(&S), 0);
    free(t);
    free(a);
    free(b);
    free(c);
    remove_tree(state_dir);
    free(state_dir);
}

/* --session-checkpoint-bytes bounds what one session's automatic checkpoints hold;
 * an explicit checkpoint is taken whatever it says. */
Test(sessions, automatic_checkpoints_stay_within_their_byte_budget)
{
    char *id = new_session("[1, 1165, 276]");
    free(complete(id, "[1, 1165, 276, 2102]", 4, NULL));
    char path[128];
    snprintf(path, sizeof path, "/v1/sessions/%s", id);
    json_t *j = req("GET", path, NULL, 200);
    json_t *cps = json_object_get(j, "checkpoints");
    cr_assert_geq(json_array_size(cps), 2, "by default every prompt and generation ends with one");
    long each = (long)json_integer_value(json_object_get(json_array_get(cps, 0), "bytes"));
    json_decref(j);
    cr_assert_eq(server_stop(&S), 0);
    char budget[32];
    snprintf(budget, sizeof budget, "%ld", each * 5 / 2);
    const char *args[] = {"--state-dir", state_dir, "--session-checkpoint-bytes", budget, NULL};
    cr_assert_eq(server_start(&S, demo(), args), 0);
    free(id);
    id = new_session("[1, 1165, 276]");
    snprintf(path, sizeof path, "/v1/sessions/%s/checkpoints", id);
    json_decref(req("POST", path, "{}", 201));      /* at 3: explicit */
    char prompt[256] = "[1, 1165, 276";
    for (int turn = 0; turn < 5; turn++) {
        for (int k = 0; k < 3; k++)
            snprintf(prompt + strlen(prompt), sizeof prompt - strlen(prompt), ", %d", 300 + 10 * turn + k);
        strcat(prompt, "]");
        free(complete(id, prompt, 3, NULL));
        prompt[strlen(prompt) - 1] = '\0';
    }
    snprintf(path, sizeof path, "/v1/sessions/%s", id);
    j = req("GET", path, NULL, 200);
    cps = json_object_get(j, "checkpoints");
    cr_assert_eq(json_array_size(cps), 3, "the explicit one and the newest two automatic ones: %s", json_dumps(j, 0));
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(cps, 0), "position")), 3);
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(cps, 2), "position")),
                 json_integer_value(json_object_get(j, "n_tokens")), "the newest is the end of the last turn");
    json_decref(j);
    free(id);
}

/* A read-only activations request on a session runs from the state the session had
 * when it arrived, whatever happens to the session meanwhile: deleting it (or its
 * eviction) between the request's runs leaves the request and the server whole. */
Test(sessions, a_session_deleted_during_a_read_only_activations_request)
{
    char *id = new_session("\"In the beginning God created the heaven and the earth.\"");
    char body[16384], path[256];
    int n = snprintf(body, sizeof body, "{\"session\":\"%s\",\"runs\":[", id);
    for (int i = 0; i < 16; i++)
        n += snprintf(body + n, sizeof body - (size_t)n, "%s{\"prompt\":\"And the earth was without form, and void; "
                      "and darkness was upon the face of the deep.\",\"hooks\":[\"logits\"]}", i ? "," : "");
    snprintf(body + n, sizeof body - (size_t)n, "]}");
    int fd = http_send_only(S.port, "POST", "/v1/activations", body);
    cr_assert_geq(fd, 0);
    snprintf(path, sizeof path, "/v1/sessions/%s", id);
    json_decref(req("DELETE", path, NULL, 200));
    char buf[65536];
    size_t got = 0;
    ssize_t k;
    while ((k = read(fd, buf + got, sizeof buf - 1 - got)) > 0 && got < sizeof buf - 1)
        got += (size_t)k;
    buf[got] = '\0';
    close(fd);
    cr_assert(strstr(buf, "HTTP/1.1 200"), "the request ran to the end: %.300s", buf);
    json_decref(req("GET", "/health", NULL, 200));
    free(id);
}

/* The last-position logits of an activations run, from `body`. */
static json_t *last_logits(const char *body, json_t **ids)
{
    json_t *j = req("POST", "/v1/activations", body, 200);
    *ids = json_incref(json_object_get(json_object_get(j, "tokens"), "ids"));
    json_t *d = json_incref(json_object_get(json_object_get(json_object_get(j, "activations"), "logits"), "data"));
    json_decref(j);
    return d;
}

/* A text prompt continuing a session goes on from the session's tokens: the
 * tokenizer's BOS starts a sequence, never the middle of one. Its logits equal a
 * stateless run of the session's tokens followed by the new ones. */
Test(sessions, a_text_prompt_continues_a_session_without_a_bos)
{
    char *id = new_session("\"In the beginning\"");
    char body[1024];
    snprintf(body, sizeof body, "{\"session\":\"%s\",\"prompt\":\" God created\",\"hooks\":[\"logits\"],"
             "\"positions\":\"last\"}", id);
    json_t *ids, *on = last_logits(body, &ids);
    cr_assert_eq(json_array_size(ids), 2, "' God created' alone, no BOS");
    json_t *head = req("POST", "/tokenize", "{\"content\":\"In the beginning\",\"add_special\":true}", 200);
    json_t *all = json_copy(json_object_get(head, "tokens"));
    json_array_extend(all, ids);
    char *prompt = json_dumps(all, JSON_COMPACT);
    snprintf(body, sizeof body, "{\"prompt\":%s,\"hooks\":[\"logits\"],\"positions\":\"last\"}", prompt);
    json_t *ids2, *off = last_logits(body, &ids2);
    cr_assert_eq(json_array_size(on), json_array_size(off));
    for (size_t i = 0; i < json_array_size(on); i++)
        cr_assert_float_eq(json_number_value(json_array_get(on, i)), json_number_value(json_array_get(off, i)), 1e-6,
                           "logit %zu", i);
    free(prompt);
    json_decref(all);
    json_decref(head);
    json_decref(ids);
    json_decref(ids2);
    json_decref(on);
    json_decref(off);
    free(id);
}

/* The prompt a session was created with, sent again on it (and again after an
 * answer: a regenerate), is served from the checkpoint at its end with the logits
 * kept there: nothing reprocessed, the answer a stateless run gives. */
Test(sessions, the_same_prompt_again_on_a_session_needs_no_step)
{
    const char *prompt = "\"And God said, Let there be light: and there was light.\"";
    char *id = new_session(prompt);
    char *off = complete(NULL, prompt, 8, NULL);
    for (int round = 0; round < 2; round++) {
        char body[1024];
        snprintf(body, sizeof body, "{\"session\":\"%s\",\"prompt\":%s,\"max_tokens\":8,\"temperature\":0,"
                 "\"logprobs\":5}", id, prompt);
        json_t *j = req("POST", "/v1/completions", body, 200);
        json_t *sess = json_object_get(j, "session");
        json_t *usage = json_object_get(j, "usage");
        cr_assert_eq(json_integer_value(json_object_get(sess, "tokens_reprocessed")), 0, "round %d", round);
        cr_assert_eq(json_integer_value(json_object_get(sess, "tokens_reused")),
                     json_integer_value(json_object_get(usage, "prompt_tokens")), "round %d: reused whole", round);
        json_t *c = json_array_get(json_object_get(j, "choices"), 0);
        json_object_del(c, "index");
        char *on = json_dumps(c, JSON_SORT_KEYS | JSON_COMPACT);
        cr_assert_str_eq(on, off, "round %d", round);
        free(on);
        json_decref(j);
    }
    free(off);
    free(id);
}

static double metric(const char *name)
{
    double v = server_metric(S.port, name);
    cr_assert_geq(v, 0, "no %s in /metrics", name);
    return v;
}

/* A completion on `id` of its tokens followed by 900 more: a session that grows
 * past 3 MB of state. */
static void grow(const char *id, int want_status)
{
    static char body[16384];
    int n = snprintf(body, sizeof body, "{\"session\":\"%s\",\"max_tokens\":1,\"prompt\":[1,2", id);
    for (int i = 0; i < 900; i++)
        n += snprintf(body + n, sizeof body - (size_t)n, ",%d", 40 + i * 7 % 3000);
    snprintf(body + n, sizeof body - (size_t)n, "]}");
    json_t *j = req("POST", "/v1/completions", body, want_status);
    if (want_status == 429)
        cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                         "session_memory_full");
    json_decref(j);
}

/* --session-memory-bytes holds as sessions grow, not only when they are created:
 * without a state directory, a session alone may grow past it, but then no other
 * session grows or is created (429 naming the byte cap) until room is made; with
 * one, idle sessions move to disk after every change until the resident state is
 * back under the cap. */
Test(session_limits, the_state_byte_cap_holds_as_sessions_grow, .timeout = 60)
{
    const char *args[] = {"--session-memory-bytes", "3000000", NULL};
    cr_assert_eq(server_start(&S, demo(), args), 0);
    char *a = new_session("[1,2]"), *b = new_session("[1,3]");
    grow(a, 200);
    cr_assert_gt(metric("strata_session_state_bytes"), 3000000, "a grew past the cap");
    grow(b, 429);
    json_t *j = req("POST", "/v1/sessions", "{}", 429);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "error"), "code")), "session_memory_full");
    json_decref(j);
    char path[256];
    snprintf(path, sizeof path, "/v1/sessions/%s", b);
    json_decref(req("DELETE", path, NULL, 200));
    grow(a, 200);                                   /* alone, it may use what it needs */
    j = req("POST", "/v1/sessions", "{\"prompt\":[1,2,3]}", 429);
    json_decref(j);
    cr_assert_eq(metric("strata_live_sessions"), 1, "a refused create leaves no session behind");
    cr_assert_eq(server_stop(&S), 0);
    free(a);
    free(b);

    state_dir = make_temp_dir();
    const char *args2[] = {"--session-memory-bytes", "3000000", "--state-dir", state_dir, NULL};
    cr_assert_eq(server_start(&S, demo(), args2), 0);
    a = new_session("[1,2]");
    b = new_session("[1,3]");
    grow(a, 200);
    cr_assert_leq(metric("strata_session_state_bytes"), 3000000, "idle sessions moved to disk");
    grow(b, 200);
    cr_assert_leq(metric("strata_session_state_bytes"), 3000000);
    snprintf(path, sizeof path, "/v1/sessions/%s", a);
    j = req("GET", path, NULL, 200);                /* comes back from disk */
    cr_assert_gt(json_integer_value(json_object_get(j, "n_tokens")), 900);
    json_decref(j);
    cr_assert_eq(server_stop(&S), 0);
    free(a);
    free(b);
    remove_tree(state_dir);
    free(state_dir);
}

/* The listing's object of session id (NULL: not listed). */
static json_t *listed(const char *id)
{
    json_t *list = req("GET", "/v1/sessions", NULL, 200), *found = NULL;
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(list, "data"), i, s)
        if (!strcmp(json_string_value(json_object_get(s, "id")), id))
            found = json_deep_copy(s);
    json_decref(list);
    return found;
}

/* After a restart, sessions still on disk are listed with what they hold (tokens,
 * state bytes, checkpoints, when they were created) before anything loads them;
 * loading one gives the same figures. */
Test(sessions, a_restart_lists_sessions_on_disk_as_they_were)
{
    char *id = new_session("\"In the beginning God created the heaven and the earth.\"");
    char path[256];
    snprintf(path, sizeof path, "/v1/sessions/%s/checkpoints", id);
    json_decref(req("POST", path, "{}", 201));
    json_t *before = listed(id);
    cr_assert(before);
    sleep(1);                       /* a reset `created` would show */
    cr_assert_eq(server_stop(&S), 0);
    start();
    json_t *after = listed(id);
    cr_assert(after);
    cr_assert(json_is_false(json_object_get(after, "resident")), "not loaded yet");
    cr_assert(json_is_true(json_object_get(after, "persisted")), "its file holds it");
    const char *same[] = {"n_tokens", "state_bytes", "created", "checkpoints"};
    for (int k = 0; k < 4; k++)
        cr_assert(json_equal(json_object_get(before, same[k]), json_object_get(after, same[k])), "%s: %s vs %s",
                  same[k], json_dumps(json_object_get(before, same[k]), JSON_ENCODE_ANY),
                  json_dumps(json_object_get(after, same[k]), JSON_ENCODE_ANY));
    snprintf(path, sizeof path, "/v1/sessions/%s", id);
    json_t *loaded = req("GET", path, NULL, 200);
    for (int k = 0; k < 4; k++)
        cr_assert(json_equal(json_object_get(before, same[k]), json_object_get(loaded, same[k])), "%s", same[k]);
    json_decref(loaded);
    json_decref(before);
    json_decref(after);
    free(id);
}
