/*
 * registry.h - the device registry: devices and their credentials, sessions,
 * and the event log, in one SQLite file (WAL mode).
 *
 * A library: it returns enum hub_err codes and never logs. One struct
 * registry is one SQLite connection and must be used by one thread at a
 * time (hubd: the registry writer thread owns one for writes and the
 * credential reloads; hubctl: its main thread). Several processes may open
 * the same file: WAL, busy timeout, short write transactions.
 *
 * Schema: schema/NNN_*.sql, applied in order on open, version recorded in
 * PRAGMA user_version. A file newer than this binary -> HUB_ERR_SCHEMA.
 *
 * Tokens: 32 random bytes (mbedTLS CTR_DRBG) printed as 43 chars base64url.
 * Stored only as "v1$<salt hex 32>$<sha256(salt||token) hex 64>"; compared in
 * constant time.
 */
#ifndef REGISTRY_H
#define REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "hub_err.h"
#include "hub_util.h"

#define REGISTRY_TOKEN_LEN 43	/* base64url of 32 bytes, no padding */
#define REGISTRY_NAME_MAX 128	/* device display name, bytes */
#define REGISTRY_SESSION_MAX 48 /* session id text, NUL included */
#define REGISTRY_ADDR_MAX 64	/* peer address text */
#define REGISTRY_HUB_MAX 64	/* hub id text */
#define REGISTRY_REASON_MAX 16	/* "hub_restart" is the longest */

struct registry;

/*
 * Opens (creating if needed) the file at path, or ":memory:". Applies
 * migrations. On failure *out is NULL and err (if not NULL) says why.
 */
int registry_open(const char *path, struct registry **out, char *err,
		  size_t errlen);
/* Closes the connection. Accepts NULL. */
void registry_close(struct registry *reg);
/* sqlite3_errmsg() of the last failure, for the caller to print. */
const char *registry_errmsg(struct registry *reg);

/* ---- devices (hubctl) ---------------------------------------------- */

struct registry_device {
	char id[HUB_ID_MAX + 1];
	char name[REGISTRY_NAME_MAX + 1];
	int disabled;
	int online;	   /* an open session exists */
	int64_t last_seen; /* ms since epoch of the last session start/end, 0 */
	int64_t created;   /* ms since epoch */
	char session[REGISTRY_SESSION_MAX]; /* open session id, or "" */
	char hub[REGISTRY_HUB_MAX + 1];	    /* hub holding it, or "" */
	char addr[REGISTRY_ADDR_MAX];	    /* its peer address, or "" */
};

/*
 * Adds a device; writes its new token (NUL-terminated) into token, which
 * has room for REGISTRY_TOKEN_LEN + 1. HUB_ERR_INVAL for a bad id,
 * HUB_ERR_EXISTS if taken. name may be NULL.
 */
int registry_device_add(struct registry *reg, const char *id, const char *name,
			char *token);
/*
 * Adds many devices in one transaction: lines "id" or "id,name" (blank
 * lines and lines starting with '#' skipped). For each, cb(arg, id, token).
 * All or nothing: on any bad line returns HUB_ERR_INVAL (or EXISTS) with
 * *bad_line set (1-based) and nothing stored.
 */
int registry_device_import(struct registry *reg, const char *text, size_t len,
			   void (*cb)(void *arg, const char *id,
				      const char *token),
			   void *arg, size_t *bad_line);
int registry_device_get(struct registry *reg, const char *id,
			struct registry_device *out);
/* Calls cb for each device in id order; online_only filters. */
int registry_device_list(struct registry *reg, int online_only,
			 void (*cb)(void *arg, const struct registry_device *d),
			 void *arg);
int registry_device_set_disabled(struct registry *reg, const char *id,
				 int disabled);
/* Deletes the device; its sessions and events stay for the record. */
int registry_device_delete(struct registry *reg, const char *id);
/* New token for the device; the old one stops working. */
int registry_device_rotate(struct registry *reg, const char *id, char *token);

/* ---- groups (groups.c) ---------------------------------------------- */

#define REGISTRY_GROUP_MAX 64 /* group names: [A-Za-z0-9_-]{1,64} */

/*
 * Adds ids[0..n) to group (already members stay), all or nothing:
 * HUB_ERR_INVAL for a bad group name or id, HUB_ERR_NOTFOUND for an id the
 * registry does not know (*bad = its index). A change reloads the hubs'
 * credential snapshots; live sessions keep the groups they started with.
 */
int registry_group_add(struct registry *reg, const char *group,
		       const char *const *ids, size_t n, size_t *bad);
/* Removes ids[0..n) from group (non-members are ignored); *removed counts. */
int registry_group_remove(struct registry *reg, const char *group,
			  const char *const *ids, size_t n, size_t *removed);
/* Every group with its member count, by name. */
int registry_group_list(struct registry *reg,
			void (*cb)(void *arg, const char *group, int64_t n),
			void *arg);
/* The groups of one device, by name. */
int registry_device_groups(struct registry *reg, const char *id,
			   void (*cb)(void *arg, const char *group), void *arg);

/* ---- events -------------------------------------------------------- */

enum registry_kind {
	REGISTRY_ONLINE,
	REGISTRY_OFFLINE,
	REGISTRY_AUTH_FAILED,
	REGISTRY_DOWNLINK_DROPPED /* reason: why (downlink_queue_full) */
};

struct registry_event {
	int64_t seq; /* event row id: rises with every event */
	char device[HUB_ID_MAX + 1];
	enum registry_kind kind;
	char reason[REGISTRY_REASON_MAX + 16]; /* offline/auth_failed reason */
	int64_t ts;			       /* ms since epoch */
	char session[REGISTRY_SESSION_MAX];
	char addr[REGISTRY_ADDR_MAX];
	char hub[REGISTRY_HUB_MAX + 1];
};

const char *registry_kind_name(enum registry_kind k);
/* Newest first; device NULL for all; limit <= 0 means 100. */
int registry_events(struct registry *reg, const char *device, int limit,
		    void (*cb)(void *arg, const struct registry_event *e),
		    void *arg);

/* ---- sessions (the registry writer thread of hubd) ----------------- */

/* Group commit: the writer wraps a batch of the calls below in these. */
int registry_begin(struct registry *reg);
int registry_commit(struct registry *reg);
int registry_rollback(struct registry *reg);

struct registry_session {
	char device[HUB_ID_MAX + 1];
	char session[REGISTRY_SESSION_MAX];
	char hub[REGISTRY_HUB_MAX + 1];
	int worker;
	char addr[REGISTRY_ADDR_MAX];
	int64_t ts; /* ms since epoch */
	/* 1: a device with a signed fleet token, maybe unknown here: create
	 * its row first (no opaque token; events and hubctl work) */
	int create_device;
};

/*
 * Records a session start: a sessions row and an 'online' event; bumps the
 * device's presence seq to max(seq + 1, ts) and returns it in *seq (the
 * "seq" of the retained status: it rises with every transition of that
 * device and roughly follows time across hubs sharing a broker).
 */
int registry_session_open(struct registry *reg,
			  const struct registry_session *s, int64_t *seq);
/*
 * Records a session end with its reason (closed, timeout, kicked, disabled,
 * replaced, shutdown, hub_restart): closes the row, adds an 'offline'
 * event, bumps and returns the presence seq. HUB_ERR_NOTFOUND if that
 * session is not open.
 */
int registry_session_close(struct registry *reg, const char *session,
			   const char *reason, int64_t ts, int64_t *seq);
/*
 * *newer = 1 if the device of `session` has another open session that
 * started no earlier than it (the question crash repair asks too): then
 * an offline status for `session` would override its successor's online
 * one, and none is due. Works on a closed session row as well. Writer
 * thread (any one connection); HUB_OK or a registry error.
 */
int registry_session_superseded(struct registry *reg, const char *session,
				int *newer);
/* A 'downlink_dropped' event: commands for the device's session were
 * dropped (reason e.g. "downlink_queue_full"); one per episode. */
int registry_downlink_dropped(struct registry *reg, const char *device,
			      const char *session, const char *hub,
			      const char *reason, int64_t ts);
/* An 'auth_failed' event (device may be an unknown id; reason e.g.
 * "bad_token"). */
int registry_auth_failed(struct registry *reg, const char *device,
			 const char *addr, const char *hub, const char *reason,
			 int64_t ts);
/*
 * Retention: deletes events older than before_ts (ms), oldest first, in
 * batches of batch rows (each its own short transaction, so sessions are
 * not held up); *deleted gets the count. Registry writer thread.
 */
int registry_events_prune(struct registry *reg, int64_t before_ts, int batch,
			  int64_t *deleted);
/*
 * Crash repair: closes every session still open for (hub, worker) - and,
 * when also_from_worker >= 0, for (hub, any worker >= also_from_worker) -
 * with reason hub_restart, in one transaction. cb(arg, device, session, seq)
 * for each, so the caller can publish the offline status; seq is 0 when the
 * device already has a newer open session in this registry (it reconnected
 * to another worker before the repair): its row is closed, but an offline
 * status would override the newer session's online one, so none is due.
 */
int registry_repair(struct registry *reg, const char *hub, int worker,
		    int also_from_worker,
		    void (*cb)(void *arg, const char *device,
			       const char *session, int64_t seq),
		    void *arg);

/* ---- the status outbox (outbox.c; the registry writer thread) ------ */

/*
 * The newest retained presence status of each device, durable between the
 * commit of its session row and the broker's PUBACK. Each row has an owner
 * (hub, worker): the worker whose bridge publishes it. Rows stay once
 * acknowledged (pending = 0): the row's seq is what a late PUBACK of an
 * older status is compared with.
 */
#define REGISTRY_STATUS_MAX 512 /* status JSON, NUL included */

struct registry_status {
	char device[HUB_ID_MAX + 1];
	int64_t seq;
	char payload[REGISTRY_STATUS_MAX]; /* NUL-terminated JSON */
};

/*
 * Records status `payload` with presence seq `seq` as the device's newest,
 * pending, owned by (hub, worker); call it in the transaction that wrote
 * the session row the status is about. *stored = 0 (and nothing changes)
 * if the outbox already holds that seq or a newer one. HUB_ERR_INVAL for a
 * bad device id or a payload of REGISTRY_STATUS_MAX bytes or more.
 */
int registry_outbox_put(struct registry *reg, const char *device, int64_t seq,
			const char *payload, const char *hub, int worker,
			int *stored);
/*
 * A broker acknowledged the status (device, seq) that (hub, worker)
 * published. If the row still holds seq it is cleared (pending = 0). If it
 * holds a newer seq that is not already pending on this worker's own
 * bridge (written by another worker, or acknowledged there before this
 * older one landed), the row is claimed (pending again, owned by (hub,
 * worker)), copied into *newer and *republish = 1: the caller publishes
 * it again, so the broker's retained status ends with the newest. Else
 * *republish = 0.
 */
int registry_outbox_acked(struct registry *reg, const char *device, int64_t seq,
			  const char *hub, int worker,
			  struct registry_status *newer, int *republish);

/* The device's newest status in the outbox (acknowledged or not): *found
 * = 0 when it has none. */
int registry_outbox_get(struct registry *reg, const char *device,
			struct registry_status *st, int *found);
/*
 * At a worker's start: claims the pending rows of (hub, worker) - and,
 * when also_from_worker >= 0, of (hub, any worker >= also_from_worker) -
 * for worker and calls cb for each, after the claim, so the caller
 * publishes them. One transaction (or the caller's).
 */
int registry_outbox_pending(
    struct registry *reg, const char *hub, int worker, int also_from_worker,
    void (*cb)(void *arg, const struct registry_status *st), void *arg);
/* Pending rows owned by (hub, worker). */
int registry_outbox_count(struct registry *reg, const char *hub, int worker,
			  int64_t *n);

/* ---- credentials cache (built by the writer, read by the service thread) */

/*
 * A change counter for the devices table (insert, delete, token, disabled),
 * kept by triggers. The writer polls PRAGMA data_version once a second and,
 * when it moved, this; a new value means reload the credentials.
 */
int registry_data_version(struct registry *reg, int64_t *out);
int registry_devices_rev(struct registry *reg, int64_t *out);

/* Bytes of heap SQLite holds in this process (every connection's page
 * cache, statements, schema): sqlite3_memory_used(). Any thread. */
uint64_t registry_memory_used(void);

/* An immutable snapshot of every device's credential: an open-addressing
 * hash table. Built on any thread, then handed over and only read. */
struct registry_creds;
int registry_creds_load(struct registry *reg, struct registry_creds **out);
void registry_creds_free(struct registry_creds *c);
/*
 * What the credential cache's owner polls: *out = a new snapshot if the
 * devices changed since (*data_version, *devices_rev), else NULL. The two
 * marks advance only with a snapshot that loaded: a read that fails (busy,
 * interrupted, out of memory) leaves them, so the next call tries again
 * and a change is never skipped. HUB_OK (with or without a snapshot) or
 * the error of the failed read. The thread that owns reg; caller frees.
 */
int registry_creds_refresh(struct registry *reg, int64_t *data_version,
			   int64_t *devices_rev, struct registry_creds **out);
size_t registry_creds_count(const struct registry_creds *c);
/*
 * The groups of a device as "a,b" (not NUL-terminated, *len bytes), or
 * NULL (*len 0) for none or an unknown id. Points into the snapshot. Pure.
 */
#define REGISTRY_CREDS_GROUPS_MAX 1024
const char *registry_creds_groups(const struct registry_creds *c,
				  const char *id, size_t *len);

/*
 * Checks a presented token for device id against the snapshot:
 * HUB_OK, HUB_ERR_AUTH (unknown id or wrong token), HUB_ERR_DISABLED
 * (right token, disabled device). Constant-time in the token. Pure.
 */
int registry_creds_check(const struct registry_creds *c, const char *id,
			 const char *token, size_t token_len);
/*
 * A 64-bit fingerprint of the device's credential (hash of its stored token
 * hash), or 0 if unknown, and whether it is disabled; the service thread
 * compares fingerprints across a reload to close sessions whose device was
 * deleted (1008), disabled (4003) or whose token was rotated (1008).
 */
uint64_t registry_creds_fingerprint(const struct registry_creds *c,
				    const char *id, int *disabled);

/* ---- tokens (exported for tests) ------------------------------------ */

/* A fresh random token, NUL-terminated, into out[REGISTRY_TOKEN_LEN + 1]. */
int registry_token_new(char *out);
/* "v1$salt$hash" for token, into out (>= 104 bytes), with a random salt. */
int registry_token_hash(const char *token, size_t len, char *out,
			size_t outlen);
/* 1 if token matches the stored "v1$salt$hash", constant time; else 0. */
int registry_token_verify(const char *stored, const char *token, size_t len);

#endif
