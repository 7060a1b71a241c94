/*
 * sessions.c — the registry of live sessions and their files in the state
 * directory: <state-dir>/<id>.safetensors, written atomically with a checksum
 * (strata_session_save) after every change, so that after a crash each session is
 * at its last persisted state or absent, never corrupt. A request's save (after a
 * generation, create, fork, checkpoint, rewind or import) runs on libuv's thread
 * pool while its session stays busy, and its answer waits for it: an answer still
 * means the session is on disk. An idle session evicted to make room is therefore
 * already on disk, and only dropped from memory (written first only when its last
 * save failed). Ids are validated before they are ever joined to a path.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sessions.h"

static session_entry *all;
static int n_sessions;
static int persisting;          /* there is a state directory */

int session_id_valid(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n < 1 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((id[i] >= 'a' && id[i] <= 'z') || (id[i] >= 'A' && id[i] <= 'Z') || (id[i] >= '0' && id[i] <= '9') ||
              id[i] == '_' || id[i] == '-'))
            return 0;
    return 1;
}

static session_entry *lookup(const char *id)
{
    for (session_entry *e = all; e; e = e->next)
        if (!strcmp(e->id, id))
            return e;
    return NULL;
}

static void file_path(const server *srv, const char *id, char *buf, size_t len);

int sessions_exists(const char *id)
{
    return session_id_valid(id) && lookup(id) != NULL;
}

static int resident(void)
{
    int n = 0;
    for (session_entry *e = all; e; e = e->next)
        n += e->s != NULL;
    return n;
}

static uint64_t resident_bytes(void)
{
    uint64_t b = 0;
    for (session_entry *e = all; e; e = e->next)
        b += e->s ? strata_session_state_bytes(e->s) : 0;
    return b;
}

static int total_cap(const server *srv)
{
    return *srv->cfg.state_dir ? srv->cfg.max_sessions * 16 : srv->cfg.max_sessions;
}

int sessions_no_room(const server *srv, api_error *e)
{
    if (n_sessions >= total_cap(srv) || resident() >= srv->cfg.max_sessions)
        return api_fail(e, 429, NULL, "too_many_sessions", "the server holds its maximum of %d sessions%s",
                        n_sessions >= total_cap(srv) ? total_cap(srv) : srv->cfg.max_sessions,
                        n_sessions >= total_cap(srv) ? "" : " in memory, none of them idle");
    return api_fail(e, 429, NULL, "session_memory_full",
                    "sessions hold %llu bytes of state, over the cap of %ld (session-memory-bytes)%s; delete "
                    "sessions or retry later", (unsigned long long)resident_bytes(), srv->cfg.session_memory_bytes,
                    *srv->cfg.state_dir ? " with none idle to move to disk" : " and there is no --state-dir for idle ones");
}

/* Move the least recently used idle resident session (not `keep`) to the state
 * directory; 0 when there is none (or no state directory). */
static int evict_one(server *srv, const session_entry *keep)
{
    session_entry *victim = NULL;
    for (session_entry *e = all; e && *srv->cfg.state_dir; e = e->next)
        if (e->s && !e->busy && e != keep && (!victim || e->last_used < victim->last_used))
            victim = e;
    if (!victim || (!victim->on_disk && sessions_persist(srv, victim) != 0))
        return 0;
    strata_session_free(victim->s);
    victim->s = NULL;
    log_line(srv, "debug", "session %s evicted to disk", victim->id);
    return 1;
}

int sessions_make_room(server *srv, uint64_t incoming)
{
    uint64_t cap = (uint64_t)srv->cfg.session_memory_bytes;
    while (resident() >= srv->cfg.max_sessions || (resident() > 0 && resident_bytes() + incoming > cap))
        if (!evict_one(srv, NULL))
            return 0;
    return 1;
}

int sessions_fit(server *srv, const session_entry *self, api_error *e)
{
    while (resident_bytes() > (uint64_t)srv->cfg.session_memory_bytes)
        if (!evict_one(srv, self))
            return resident() == 1 ? 1 : sessions_no_room(srv, e);
    return 1;
}

/* After a session changed: back under the byte cap, moving idle ones to disk. */
static void trim(server *srv)
{
    while (resident_bytes() > (uint64_t)srv->cfg.session_memory_bytes && evict_one(srv, NULL))
        ;
}

static void forget(session_entry *e)
{
    for (session_entry **pp = &all; *pp; pp = &(*pp)->next)
        if (*pp == e) {
            *pp = e->next;
            break;
        }
    strata_session_free(e->s);
    free(e);
    n_sessions--;
}

session_entry *sessions_find(server *srv, const char *id, api_error *ae)
{
    session_entry *e = session_id_valid(id) ? lookup(id) : NULL;
    if (!e)
        api_fail(ae, 404, "session", "session_not_found", "no session '%.64s'", id ? id : "(not a string)");
    if (!e || e->s)
        return e;
    char path[4200];
    strata_error err;
    file_path(srv, e->id, path, sizeof path);
    if (!sessions_make_room(srv, e->state_bytes)) {
        sessions_no_room(srv, ae);
        return NULL; /* no room now; the file stays */
    }
    if (strata_session_load(srv->model, path, &e->s, &err) != STRATA_OK) {
        api_fail(ae, 404, "session", "session_not_found", "session '%s' was lost: its file is unreadable", e->id);
        log_line(srv, "error", "session %s lost: %s", e->id, err.message);
        char bad[4300];
        snprintf(bad, sizeof bad, "%s.corrupt", path);
        rename(path, bad);
        forget(e);
        return NULL;
    }
    strata_session_set_checkpoint_budget(e->s, (uint64_t)srv->cfg.session_checkpoint_bytes);
    e->on_disk = 1;
    return e;
}

void sessions_expire(server *srv)
{
    if (srv->cfg.session_ttl_s <= 0)
        return;
    double cutoff = (double)time(NULL) - srv->cfg.session_ttl_s;
    for (session_entry *e = all, *next; e; e = next) {
        next = e->next;
        if (!e->busy && e->last_used < cutoff) {
            char id[sizeof e->id];
            memcpy(id, e->id, sizeof id);
            if (sessions_remove(srv, e) == 0)     /* else logged; the next sweep tries again */
                log_line(srv, "info", "session %s expired", id);
        }
    }
}

/* The entry's figures for listing it while evicted. */
static void note_sizes(session_entry *e)
{
    e->n_tokens = strata_session_n_tokens(e->s);
    e->state_bytes = strata_session_state_bytes(e->s);
    e->n_cps = strata_session_checkpoint_count(e->s);
    for (int i = 0; i < e->n_cps; i++)
        strata_session_checkpoint_info(e->s, i, &e->cp_position[i], &e->cp_bytes[i]);
}

/* The same for a file found at start-up, from its header. */
static void note_file(const server *srv, session_entry *e)
{
    char path[4200];
    strata_session_summary sum;
    file_path(srv, e->id, path, sizeof path);
    sessions_touch(e);
    e->created = e->last_used;
    if (strata_session_peek(path, &sum, NULL) != STRATA_OK) {
        e->n_tokens = -1;       /* unreadable: loading it will say why */
        return;
    }
    e->on_disk = 1;             /* its file is all there is of it */
    e->n_tokens = sum.n_tokens;
    e->state_bytes = sum.state_bytes;
    e->n_cps = sum.n_checkpoints;
    memcpy(e->cp_position, sum.checkpoint_position, sizeof e->cp_position);
    memcpy(e->cp_bytes, sum.checkpoint_bytes, sizeof e->cp_bytes);
    e->created = sum.created ? (double)sum.created : e->created;
    e->last_used = sum.saved ? (double)sum.saved : e->last_used;
}

static void fresh_id(char *buf, size_t len)
{
    static uint64_t counter;
    uint64_t x = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ULL ^ (uint64_t)getpid() << 32 ^ ++counter * 0xbf58476d1ce4e5b9ULL;
    FILE *f = fopen("/dev/urandom", "rb");
    if (f) {
        uint64_t r;
        if (fread(&r, sizeof r, 1, f) == 1)
            x ^= r;
        fclose(f);
    }
    snprintf(buf, len, "sess_%016llx", (unsigned long long)x);
}

session_entry *sessions_add(server *srv, strata_session *s, const char *id)
{
    if (n_sessions >= total_cap(srv) || !sessions_make_room(srv, strata_session_state_bytes(s)))
        return NULL;
    session_entry *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    if (id)
        snprintf(e->id, sizeof e->id, "%s", id);
    else
        do
            fresh_id(e->id, sizeof e->id);
        while (lookup(e->id));
    e->s = s;
    strata_session_set_checkpoint_budget(s, (uint64_t)srv->cfg.session_checkpoint_bytes);
    note_sizes(e);
    sessions_touch(e);
    e->created = (double)strata_session_created(s);
    e->next = all;
    all = e;
    n_sessions++;
    return e;
}

static void file_path(const server *srv, const char *id, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s.safetensors", srv->cfg.state_dir, id);
}

int sessions_remove(server *srv, session_entry *e)
{
    if (*srv->cfg.state_dir) {  /* the file first: one left behind would bring the session back at the next start */
        char path[4200];
        file_path(srv, e->id, path, sizeof path);
        if (unlink(path) != 0 && errno != ENOENT) {
            log_line(srv, "error", "session %s not deleted: %s", e->id, strerror(errno));
            return -1;
        }
    }
    for (session_entry **pp = &all; *pp; pp = &(*pp)->next)
        if (*pp == e) {
            *pp = e->next;
            break;
        }
    strata_session_free(e->s);
    free(e);
    n_sessions--;
    return 0;
}


int sessions_persist(server *srv, session_entry *e)
{
    if (!e->s)
        return 0;
    note_sizes(e);
    if (!*srv->cfg.state_dir)
        return 0;
    char path[4200];
    file_path(srv, e->id, path, sizeof path);
    strata_error err;
    e->on_disk = strata_session_save(e->s, path, &err) == STRATA_OK;
    if (!e->on_disk) {
        log_line(srv, "error", "session %s not persisted: %s", e->id, err.message);
        return -1;
    }
    return 0;
}

void sessions_touch(session_entry *e)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    e->last_used = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void sessions_claim(session_entry *e)
{
    e->busy = 1;
    e->on_disk = 0;
}

/* A save on libuv's thread pool: serializing, writing and fsync-ing a session file
 * takes milliseconds to seconds (it grows with the checkpoints), which the loop
 * thread, serving every other client, must not spend. */
typedef struct persist_req {
    uv_work_t work;
    server *srv;
    session_entry *e;
    char path[4200];
    strata_status status;
    strata_error err;
    void (*done)(void *arg);
    void *arg;
} persist_req;

static int persists_pending;

static void persist_work(uv_work_t *w)
{
    persist_req *p = w->data;
    p->status = strata_session_save(p->e->s, p->path, &p->err);
}

static void persist_after(uv_work_t *w, int status)
{
    persist_req *p = w->data;
    p->e->on_disk = status == 0 && p->status == STRATA_OK;
    if (!p->e->on_disk)
        log_line(p->srv, "error", "session %s not persisted: %s", p->e->id,
                 status != 0 ? uv_strerror(status) : p->err.message);
    persists_pending--;
    p->done(p->arg);
    trim(p->srv);
    free(p);
}

int sessions_persist_async(server *srv, session_entry *e, void (*done)(void *arg), void *arg)
{
    if (!e->s)
        return 0;
    note_sizes(e);
    if (!*srv->cfg.state_dir)
        return 0;
    persist_req *p = calloc(1, sizeof *p);
    if (p) {
        *p = (persist_req){.srv = srv, .e = e, .done = done, .arg = arg};
        p->work.data = p;
        file_path(srv, e->id, p->path, sizeof p->path);
    }
    if (!p || uv_queue_work(srv->loop, &p->work, persist_work, persist_after) != 0) {
        free(p);
        sessions_persist(srv, e);   /* no thread for it: here and now */
        return 0;
    }
    persists_pending++;
    return 1;
}

void sessions_flush(server *srv)
{
    while (persists_pending > 0)
        uv_run(srv->loop, UV_RUN_ONCE);
}

void sessions_init(server *srv)
{
    persisting = *srv->cfg.state_dir != '\0';
    if (!persisting)
        return;
    mkdir(srv->cfg.state_dir, 0700);
    DIR *d = opendir(srv->cfg.state_dir);
    if (!d) {
        log_line(srv, "error", "--state-dir %s cannot be read", srv->cfg.state_dir);
        return;
    }
    struct dirent *de;
    int loaded = 0, bad = 0;
    while ((de = readdir(d))) {
        char id[72];
        const char *dot = strstr(de->d_name, ".safetensors");
        if (!dot || dot[12] || (size_t)(dot - de->d_name) >= sizeof id)
            continue;
        memcpy(id, de->d_name, (size_t)(dot - de->d_name));
        id[dot - de->d_name] = '\0';
        if (!session_id_valid(id) || lookup(id)) {
            bad++;
            continue;
        }
        /* registered now, loaded (and checksum-verified) on first use */
        session_entry *e = calloc(1, sizeof *e);
        if (!e)
            break;
        snprintf(e->id, sizeof e->id, "%s", id);
        note_file(srv, e);
        e->next = all;
        all = e;
        n_sessions++;
        loaded++;
    }
    closedir(d);
    log_line(srv, "info", "sessions: %d found in %s (loaded on first use)%s", loaded, srv->cfg.state_dir,
             bad ? "; some files ignored" : "");
}

void sessions_free(server *srv)
{
    (void)srv;
    while (all) { /* the files stay: they are what the next start loads */
        session_entry *e = all;
        all = e->next;
        strata_session_free(e->s);
        free(e);
        n_sessions--;
    }
}

int sessions_count(const server *srv)
{
    (void)srv;
    return n_sessions;
}

uint64_t sessions_bytes(const server *srv)
{
    (void)srv;
    return resident_bytes();
}

void session_json(const session_entry *e, strbuf *b)
{
    sb_puts(b, "{\"id\":");
    sb_json_string(b, e->id, strlen(e->id));
    if (persisting)     /* with a state directory: whether its file holds this state (a save can fail) */
        sb_printf(b, ",\"persisted\":%s", e->on_disk ? "true" : "false");
    sb_printf(b, ",\"object\":\"session\",\"n_tokens\":%d,\"state_bytes\":%llu,\"busy\":%s,\"resident\":%s,"
                 "\"created\":%ld,\"last_used\":%ld,\"tokens_reprocessed\":%d,\"checkpoints\":[",
              e->s ? strata_session_n_tokens(e->s) : e->n_tokens,
              (unsigned long long)(e->s ? strata_session_state_bytes(e->s) : e->state_bytes), e->busy ? "true" : "false",
              e->s ? "true" : "false", (long)e->created, (long)e->last_used, e->last_reprocessed);
    int n = e->s ? strata_session_checkpoint_count(e->s) : e->n_cps;
    for (int i = 0; i < n; i++) {
        int pos = e->cp_position[i];
        uint64_t bytes = e->cp_bytes[i];
        if (e->s)
            strata_session_checkpoint_info(e->s, i, &pos, &bytes);
        sb_printf(b, "%s{\"id\":\"cp-%d\",\"position\":%d,\"bytes\":%llu}", i ? "," : "", pos, pos,
                  (unsigned long long)bytes);
    }
    sb_puts(b, "]}");
}

void sessions_each_json(strbuf *b)
{
    for (session_entry *e = all; e; e = e->next) {
        if (e != all)
            sb_puts(b, ",");
        session_json(e, b);
    }
}
