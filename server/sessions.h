/*
 * sessions.h — the server's sessions: a registry of strata_session objects by id,
 * who is using each (single writer), and their persistence in the state directory.
 */
#ifndef STRATA_SERVER_SESSIONS_H
#define STRATA_SERVER_SESSIONS_H

#include "http.h"

typedef struct session_entry {
    char id[72];
    strata_session *s;          /* NULL while evicted to the state directory */
    int n_tokens;               /* as of the last change (for listing evicted sessions) */
    uint64_t state_bytes;
    int n_cps;                  /* the checkpoints, likewise */
    int cp_position[STRATA_SESSION_MAX_CHECKPOINTS];
    uint64_t cp_bytes[STRATA_SESSION_MAX_CHECKPOINTS];
    int busy;                   /* a request is running on it */
    int on_disk;                /* the state directory's file holds exactly this state
                                   (an eviction then writes nothing) */
    double created, last_used;  /* seconds since the epoch, to the nanosecond: the
                                   LRU order of evictions holds within a second */
    int last_reprocessed;       /* tokens re-processed by the last request */
    struct session_entry *next;
} session_entry;

/* Load every session persisted in the state directory (corrupt files are reported
 * and skipped). */
void sessions_init(server *srv);
void sessions_free(server *srv);
/* The session, loaded back from the state directory if it was evicted; else NULL
 * and the error in e: 404 for unknown or malformed ids (and for a file found
 * corrupt: that session is lost), 429 when there is no room to load it back. */
session_entry *sessions_find(server *srv, const char *id, api_error *e);
/* Whether a session has this id (resident or evicted; nothing is loaded). */
int sessions_exists(const char *id);
/* Make room for one more resident session of `incoming` state bytes: evict idle
 * ones to disk (LRU) while the caps on resident sessions and state bytes would be
 * exceeded (one alone may pass the byte cap). 0: cannot (-> 429). */
int sessions_make_room(server *srv, uint64_t incoming);
/* Before a request grows resident session `self`: evict idle others while the
 * sessions' state is over --session-memory-bytes (every change is followed by the
 * same trim, self included). 1: go on (also when self is the only one resident);
 * 0 with the 429 in e. */
int sessions_fit(server *srv, const session_entry *self, api_error *e);
/* The 429 for a full server, naming the cap that is reached; returns 0. */
int sessions_no_room(const server *srv, api_error *e);
/* Drop sessions idle for longer than the TTL (memory and disk). */
void sessions_expire(server *srv);
/* Register s under a fresh id (or `id` when given and free); NULL when the cap is
 * reached (s is then still the caller's). */
session_entry *sessions_add(server *srv, strata_session *s, const char *id);
/* Forget the session and delete its file; -1 (logged, the session kept) when the
 * file cannot be deleted, as it would bring the session back at the next start. */
int sessions_remove(server *srv, session_entry *e);
/* The session was used now. */
void sessions_touch(session_entry *e);
/* A request takes the session (single writer): busy, and no longer known to match
 * its file until its save. */
void sessions_claim(session_entry *e);
/* Write the session to the state directory (no-op without one); logs failures. */
int sessions_persist(server *srv, session_entry *e);
/* The same on libuv's thread pool, then done(arg) on the loop thread; the session must
 * stay untouched until then (its request keeps it busy). 0 when there was nothing to
 * write in the background (no state directory; or no thread: written here and now):
 * done is not called then. */
int sessions_persist_async(server *srv, session_entry *e, void (*done)(void *arg), void *arg);
/* Run the loop until every background save is done (shutdown). */
void sessions_flush(server *srv);
int sessions_count(const server *srv);
uint64_t sessions_bytes(const server *srv);
/* Whether a string may be a session id: [A-Za-z0-9_-], 1..64 characters. */
int session_id_valid(const char *id);
/* Every session's object, comma-separated (for the list route). */
void sessions_each_json(strbuf *b);
/* The session object of api.md. */
void session_json(const session_entry *e, strbuf *b);

#endif
