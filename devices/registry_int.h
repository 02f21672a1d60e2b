/*
 * registry_int.h - private to devices/: the definition of struct registry,
 * its prepared statements, and the registry__ helpers shared between the
 * files of the module (registry.c: connection, migrations, transactions;
 * device.c: device admin; session.c: sessions and events; outbox.c:
 * the status outbox; token.c: tokens
 * and the CSPRNG; creds.c: the credential snapshot).
 *
 * Threads: a struct registry is used by one thread at a time (see
 * registry.h). The token CSPRNG in token.c is process-wide and locked.
 */
#ifndef REGISTRY_INT_H
#define REGISTRY_INT_H

#include <sqlite3.h>

#include "registry.h"

/* Every statement the module runs, prepared once at open. */
enum registry_stmt {
	ST_BEGIN,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_SAVEPOINT,
	ST_RELEASE,
	ST_ROLLBACK_TO,
	ST_DATA_VERSION,
	ST_DEVICES_REV,
	ST_DEV_INSERT,
	ST_DEV_GET,
	ST_DEV_LIST,
	ST_DEV_SET_DISABLED,
	ST_DEV_DELETE,
	ST_DEV_SET_TOKEN,
	ST_DEV_PRESENCE,
	ST_SES_INSERT,
	ST_DEV_ENSURE,
	ST_DEV_EXISTS,
	ST_GRP_ADD,
	ST_GRP_REMOVE,
	ST_GRP_LIST,
	ST_GRP_OF_DEVICE,
	ST_SES_CLOSE,
	ST_SES_OPEN_FOR_HUB,
	ST_SES_SUPERSEDED,
	ST_EV_INSERT,
	ST_EV_ALL,
	ST_EV_DEVICE,
	ST_CREDS_ALL,
	ST_OB_PUT,
	ST_OB_GET,
	ST_OB_CLEAR,
	ST_OB_CLAIM,
	ST_OB_PENDING,
	ST_OB_COUNT,
	ST__COUNT
};

struct registry {
	sqlite3 *db;
	sqlite3_stmt *st[ST__COUNT];
	char msg[256]; /* the last failure, for registry_errmsg() */
};

/* Stored token hash: "v1$" + 32 hex + "$" + 64 hex. */
#define REGISTRY__SALT_LEN 16
#define REGISTRY__DIGEST_LEN 32
#define REGISTRY__HASH_STR_LEN (3 + 2 * REGISTRY__SALT_LEN + 1 + 2 * 32)

/*
 * Maps a SQLite result code to a hub_err and records sqlite3_errmsg() for
 * registry_errmsg(). Call at the point of failure, before any rollback
 * overwrites the message.
 */
int registry__sqlerr(struct registry *reg, int rc);
/* Records hub_strerror(err) as the message; returns err. */
int registry__fail(struct registry *reg, int err);
/*
 * The prepared statement st, ready to bind. Every user calls
 * registry__reset() on it before returning, so no statement holds a read
 * snapshot (which would freeze PRAGMA data_version and block checkpoints).
 */
sqlite3_stmt *registry__stmt(struct registry *reg, enum registry_stmt st);
/* Resets s and clears its bindings. Accepts NULL. */
void registry__reset(sqlite3_stmt *s);
/* Steps a statement expected to finish without rows: HUB_OK or mapped. */
int registry__step_done(struct registry *reg, sqlite3_stmt *s);

/*
 * An atomic unit of work that works alone and inside the caller's
 * registry_begin(): BEGIN IMMEDIATE in autocommit mode, else a SAVEPOINT.
 * registry__op_end() commits (rc == HUB_OK) or rolls back, and returns rc
 * or the commit's failure.
 */
struct registry__op {
	int owned; /* 1: our BEGIN, 2: our SAVEPOINT */
};
int registry__op_begin(struct registry *reg, struct registry__op *op);
int registry__op_end(struct registry *reg, struct registry__op *op, int rc);

/* Binds text, or NULL when s is NULL or empty (for optional columns). */
int registry__bind_opt(sqlite3_stmt *s, int col, const char *v);
/* Copies column col (NULL -> "") into out[outlen], truncating. */
void registry__col_text(sqlite3_stmt *s, int col, char *out, size_t outlen);

/* len of s if it is shorter than max, else max (s may be NULL: 0). */
size_t registry__strnlen(const char *s, size_t max);

/* Fills buf with CSPRNG bytes (locked, reseeded after fork). */
int registry__random(unsigned char *buf, size_t len);
/* Salted SHA-256: digest = sha256(salt || token). */
int registry__digest(const unsigned char *salt, const char *token, size_t len,
		     unsigned char *digest);
/*
 * Parses a stored "v1$salt$hash" into its raw salt and digest. HUB_OK or
 * HUB_ERR_INVAL.
 */
int registry__hash_parse(const char *stored, size_t len, unsigned char *salt,
			 unsigned char *digest);

#endif
