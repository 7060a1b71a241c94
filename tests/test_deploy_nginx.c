/*
 * test_deploy_nginx.c — deploy/nginx in front of three strata-server replicas on
 * 127.0.0.1, each with its own state directory: every request about a session
 * reaches the replica that holds it (X-Session-Id or the id in the path), a
 * replica killed with -9 loses only its own sessions (the others keep working, and
 * its persisted ones are back when it restarts on its state dir), and a session
 * exported from one replica imports on another and continues with the same tokens.
 * Skipped with a message when nginx is not installed.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "http_client.h"
#include "util.h"

#define N_REPLICAS 3
#define N_SESSIONS 9

static test_server R[N_REPLICAS];
static char *root, state[N_REPLICAS][4200];
static pid_t nginx_pid;
static int lb_port;

static const char *repo(void) { return getenv("STRATA_ROOT") ? getenv("STRATA_ROOT") : "."; }

static const char *nginx_bin(void)
{
    static const char *const candidates[] = {"/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx", NULL};
    for (int i = 0; candidates[i]; i++)
        if (access(candidates[i], X_OK) == 0)
            return candidates[i];
    return NULL;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    cr_assert(bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void start_replica(int i, int port)
{
    char demo[4200], p[16];
    snprintf(demo, sizeof demo, "%s/models/strata-demo", repo());
    snprintf(p, sizeof p, "%d", port);
    const char *args[] = {"--state-dir", state[i], "--threads", "1", port ? "--port" : NULL, p, NULL};
    cr_assert_eq(server_start(&R[i], demo, args), 0, "replica %d starts", i);
}

/* The shipped routing and proxy snippets, around an upstream of our replicas. */
static void write_nginx_conf(const char *path)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f, "daemon off;\nworker_processes 1;\npid %s/nginx.pid;\nerror_log %s/error.log;\n"
               "events { worker_connections 256; }\nhttp {\n  access_log off;\n", root, root);
    static const char *const temps[] = {"client_body", "proxy", "fastcgi", "uwsgi", "scgi"};
    for (int i = 0; i < 5; i++)
        fprintf(f, "  %s_temp_path %s/tmp_%s;\n", temps[i], root, temps[i]);
    fprintf(f, "  include %s/deploy/nginx/strata-routing.conf;\n  upstream strata {\n"
               "    hash $strata_route consistent;\n", repo());
    for (int i = 0; i < N_REPLICAS; i++)
        fprintf(f, "    server 127.0.0.1:%d max_fails=1 fail_timeout=1s;\n", R[i].port);
    fprintf(f, "    keepalive 8;\n  }\n  server {\n    listen 127.0.0.1:%d;\n"
               "    location / { include %s/deploy/nginx/strata-proxy.conf; }\n  }\n}\n", lb_port, repo());
    fclose(f);
}

static int lb(const char *method, const char *path, const char *body, const char *session, http_response *r)
{
    char hdr[128] = "";
    if (session)
        snprintf(hdr, sizeof hdr, "X-Session-Id: %s\r\n", session);
    return http_do(lb_port, method, path, body, body ? strlen(body) : 0, hdr, r);
}

/* Which replica answered (X-Strata-Upstream), or -1. */
static int replica_of(const http_response *r)
{
    const char *h = r->headers ? strstr(r->headers, "X-Strata-Upstream: 127.0.0.1:") : NULL;
    int port = h ? atoi(h + strlen("X-Strata-Upstream: 127.0.0.1:")) : 0;
    for (int i = 0; i < N_REPLICAS; i++)
        if (R[i].port == port)
            return i;
    return -1;
}

static void setup(void)
{
    if (!nginx_bin())
        return;
    root = make_temp_dir();
    for (int i = 0; i < N_REPLICAS; i++) {
        snprintf(state[i], sizeof state[i], "%s/state%d", root, i);
        start_replica(i, 0);
    }
    lb_port = free_port();
    char conf[4300];
    snprintf(conf, sizeof conf, "%s/nginx.conf", root);
    write_nginx_conf(conf);
    nginx_pid = fork();
    if (nginx_pid == 0) {
        char err[4300];
        snprintf(err, sizeof err, "%s/error.log", root);
        execl(nginx_bin(), "nginx", "-e", err, "-p", root, "-c", conf, (char *)NULL);
        _exit(127);
    }
    http_response r;
    int up = 0;
    for (int tries = 0; tries < 100 && !up; tries++) {
        up = lb("GET", "/health", NULL, NULL, &r) == 0 && r.status == 200;
        if (r.headers || r.body)
            http_response_free(&r);
        if (!up)
            usleep(50000);
    }
    cr_assert(up, "nginx answers on 127.0.0.1:%d", lb_port);
}

static void teardown(void)
{
    if (!root)
        return;
    kill(nginx_pid, SIGTERM);
    waitpid(nginx_pid, NULL, 0);
    for (int i = 0; i < N_REPLICAS; i++)
        if (R[i].pid > 0)
            server_stop(&R[i]);
    remove_tree(root);
    free(root);
    root = NULL;
}

/* A greedy continuation of the session through nginx: the text, and the replica. */
static char *continue_session(const char *id, int *replica)
{
    char body[256];
    snprintf(body, sizeof body, "{\"prompt\":\"And God said\",\"max_tokens\":6,\"temperature\":0,\"session\":\"%s\"}", id);
    http_response r;
    cr_assert_eq(lb("POST", "/v1/completions", body, id, &r), 0);
    cr_assert_eq(r.status, 200, "%s: %s", id, r.body);
    *replica = replica_of(&r);
    json_t *j = json_loads(r.body, 0, NULL);
    char *text = strdup(json_string_value(json_object_get(json_array_get(json_object_get(j, "choices"), 0), "text")));
    json_decref(j);
    http_response_free(&r);
    return text;
}

static int get_status(int port_or_lb, const char *path, int *replica)
{
    http_response r;
    cr_assert_eq(port_or_lb ? http_do(port_or_lb, "GET", path, NULL, 0, NULL, &r) : lb("GET", path, NULL, NULL, &r), 0);
    int st = r.status;
    if (replica)
        *replica = replica_of(&r);
    http_response_free(&r);
    return st;
}

Test(deploy_nginx, sessions_stick_to_their_replica_and_survive_failover, .init = setup, .fini = teardown,
     .timeout = 240)
{
    if (!nginx_bin())
        cr_skip_test("nginx is not installed (apt-get install nginx-light): the load-balancer test is skipped");
    char ids[N_SESSIONS][24];
    int home[N_SESSIONS], used[N_REPLICAS] = {0};
    for (int k = 0; k < N_SESSIONS; k++) {
        snprintf(ids[k], sizeof ids[k], "conv-%d", k);
        http_response r;
        cr_assert_eq(lb("POST", "/v1/sessions", "{\"prompt\":\"In the beginning\"}", ids[k], &r), 0);
        cr_assert_eq(r.status, 201, "%s", r.body);
        json_t *j = json_loads(r.body, 0, NULL);
        cr_assert_str_eq(json_string_value(json_object_get(j, "id")), ids[k], "the session is named by its key");
        json_decref(j);
        home[k] = replica_of(&r);
        cr_assert_geq(home[k], 0, "X-Strata-Upstream names a replica: %s", r.headers);
        used[home[k]]++;
        http_response_free(&r);
    }
    cr_assert(used[0] + used[1] + used[2] == N_SESSIONS && (!!used[0] + !!used[1] + !!used[2]) >= 2,
              "sessions spread over the replicas (%d %d %d)", used[0], used[1], used[2]);
    /* every request about a session reaches its replica, by header or by path */
    char path[256];
    for (int k = 0; k < N_SESSIONS; k++) {
        int at;
        free(continue_session(ids[k], &at));
        cr_expect_eq(at, home[k], "completion of %s", ids[k]);
        snprintf(path, sizeof path, "/v1/sessions/%s", ids[k]);
        cr_expect_eq(get_status(0, path, &at), 200);
        cr_expect_eq(at, home[k], "GET %s", path);
        for (int i = 0; i < N_REPLICAS; i++)
            cr_expect_eq(get_status(R[i].port, path, NULL), i == home[k] ? 200 : 404, "%s on replica %d", path, i);
    }
    /* kill -9 the busiest replica: the others keep serving their sessions */
    int dead = used[0] >= used[1] && used[0] >= used[2] ? 0 : used[1] >= used[2] ? 1 : 2;
    int dead_port = R[dead].port;
    kill(R[dead].pid, SIGKILL);
    waitpid(R[dead].pid, NULL, 0);
    close(R[dead].log_fd);
    R[dead].pid = 0;
    for (int k = 0; k < N_SESSIONS; k++) {
        snprintf(path, sizeof path, "/v1/sessions/%s", ids[k]);
        int at, st = get_status(0, path, &at);
        if (home[k] == dead) {
            cr_expect_eq(st, 404, "%s lived on the dead replica", ids[k]);
        } else {
            cr_expect_eq(st, 200, "%s survives on replica %d", ids[k], home[k]);
            cr_expect_eq(at, home[k]);
            free(continue_session(ids[k], &at));
            cr_expect_eq(at, home[k]);
        }
    }
    /* restarted on its state dir, the dead replica has its persisted sessions back */
    start_replica(dead, dead_port);
    for (int k = 0; k < N_SESSIONS; k++) {
        if (home[k] != dead)
            continue;
        snprintf(path, sizeof path, "/v1/sessions/%s", ids[k]);
        int st = 0, at = -1;
        for (int tries = 0; tries < 60 && st != 200; tries++) {
            st = get_status(0, path, &at);
            if (st != 200)
                usleep(100000); /* nginx retries the replica after fail_timeout */
        }
        cr_expect_eq(st, 200, "%s is back after the restart", ids[k]);
        cr_expect_eq(at, dead);
    }
}

Test(deploy_nginx, exported_session_imports_on_another_replica_and_continues, .init = setup, .fini = teardown,
     .timeout = 240)
{
    if (!nginx_bin())
        cr_skip_test("nginx is not installed (apt-get install nginx-light): the load-balancer test is skipped");
    http_response r;
    cr_assert_eq(lb("POST", "/v1/sessions", "{\"prompt\":\"In the beginning God created\"}", "travel", &r), 0);
    cr_assert_eq(r.status, 201, "%s", r.body);
    int from = replica_of(&r);
    http_response_free(&r);
    cr_assert_eq(lb("GET", "/v1/sessions/travel/export", NULL, NULL, &r), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_eq(replica_of(&r), from);
    int to = (from + 1) % N_REPLICAS;
    http_response imp;
    cr_assert_eq(http_do(R[to].port, "POST", "/v1/sessions/import", r.body, r.body_len, "X-Session-Id: travel\r\n",
                         &imp), 0);
    cr_assert_eq(imp.status, 201, "%s", imp.body);
    http_response_free(&imp);
    http_response_free(&r);
    /* the same greedy continuation on both replicas */
    const char *body = "{\"prompt\":\"In the beginning God created the heaven\",\"max_tokens\":8,\"temperature\":0,"
                       "\"logprobs\":2,\"session\":\"travel\"}";
    http_response a, b;
    cr_assert_eq(http_do(R[from].port, "POST", "/v1/completions", body, strlen(body), NULL, &a), 0);
    cr_assert_eq(http_do(R[to].port, "POST", "/v1/completions", body, strlen(body), NULL, &b), 0);
    cr_assert_eq(a.status, 200, "%s", a.body);
    cr_assert_eq(b.status, 200, "%s", b.body);
    json_t *ja = json_loads(a.body, 0, NULL), *jb = json_loads(b.body, 0, NULL);
    json_t *ca = json_array_get(json_object_get(ja, "choices"), 0), *cb = json_array_get(json_object_get(jb, "choices"), 0);
    cr_expect_str_eq(json_string_value(json_object_get(cb, "text")), json_string_value(json_object_get(ca, "text")));
    cr_expect(json_equal(json_object_get(ca, "logprobs"), json_object_get(cb, "logprobs")), "same tokens, same logprobs");
    json_t *ua = json_object_get(ja, "usage"), *ub = json_object_get(jb, "usage");
    cr_expect(json_equal(json_object_get(ua, "prompt_tokens_details"), json_object_get(ub, "prompt_tokens_details")),
              "the imported session reuses its state as the original does");
    json_decref(ja);
    json_decref(jb);
    http_response_free(&a);
    http_response_free(&b);
    /* an id that exists already is refused */
    cr_assert_eq(http_do(R[to].port, "POST", "/v1/sessions", NULL, 0, "X-Session-Id: travel\r\n", &r), 0);
    cr_expect_eq(r.status, 409);
    http_response_free(&r);
}
