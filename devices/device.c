/*
 * device.c - device administration (hubctl): add, import, get, list,
 * enable/disable, delete, token rotation.
 *
 * Design: a new token is generated, hashed (token.c) and written in one
 * statement; the plain token only travels back to the caller. Import runs
 * every insert in one transaction and hands the tokens to the caller's
 * callback only after the commit, so a failed import prints nothing and
 * stores nothing. Changes to token_hash and disabled bump devices_rev
 * through triggers (schema/001_init.sql), which is how hubd notices them.
 *
 * Threads: the calling thread owns the struct registry (registry.h).
 * Callbacks run on it, while a statement is active: they must not call back
 * into the same struct registry.
 */
#include "proto.h"
#include "registry_int.h"

#include <stdlib.h>
#include <string.h>

#include <mbedtls/platform_util.h>

static int
id_ok(const char *id)
{
	return id && proto_id_valid(id, strnlen(id, HUB_ID_MAX + 1));
}

/* Display names: bounded, no control characters (they end up in tables). */
static int
name_ok(const char *name, size_t len)
{
	size_t i;

	if (len > REGISTRY_NAME_MAX)
		return 0;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];

		if (c < 0x20 || c == 0x7f)
			return 0;
	}
	return 1;
}

static int
insert_device(struct registry *reg, const char *id, size_t idlen,
	      const char *name, size_t namelen, int64_t now, char *token)
{
	char hash[REGISTRY__HASH_STR_LEN + 1];
	sqlite3_stmt *s = registry__stmt(reg, ST_DEV_INSERT);
	int err, rc;

	err = registry_token_new(token);
	if (err != HUB_OK)
		goto out;
	err =
	    registry_token_hash(token, REGISTRY_TOKEN_LEN, hash, sizeof(hash));
	if (err != HUB_OK)
		goto out;
	if (sqlite3_bind_text(s, 1, id, (int)idlen, SQLITE_STATIC) ||
	    sqlite3_bind_text(s, 2, name ? name : "", (int)namelen,
			      SQLITE_STATIC) ||
	    sqlite3_bind_text(s, 3, hash, -1, SQLITE_STATIC) ||
	    sqlite3_bind_int64(s, 4, now)) {
		err = registry__sqlerr(reg, sqlite3_errcode(reg->db));
		goto out;
	}
	rc = sqlite3_step(s);
	if (rc != SQLITE_DONE)
		err = registry__sqlerr(reg, rc);
out:
	registry__reset(s);
	if (err != HUB_OK)
		mbedtls_platform_zeroize(token, REGISTRY_TOKEN_LEN + 1);
	return err;
}

int
registry_device_add(struct registry *reg, const char *id, const char *name,
		    char *token)
{
	size_t namelen = registry__strnlen(name, REGISTRY_NAME_MAX + 1);
	int err;

	if (!reg || !token)
		return HUB_ERR_INVAL;
	token[0] = '\0';
	if (!id_ok(id) || !name_ok(name, namelen))
		return registry__fail(reg, HUB_ERR_INVAL);
	err = insert_device(reg, id, strlen(id), name, namelen, hub_clock_ms(),
			    token);
	if (err == HUB_ERR_EXISTS)
		registry__fail(reg, err);
	return err;
}

/* ---- import ----------------------------------------------------------- */

struct import_row {
	char id[HUB_ID_MAX + 1];
	char token[REGISTRY_TOKEN_LEN + 1];
};

static int
is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

static void
trim(const char **s, size_t *n)
{
	while (*n && is_blank((*s)[*n - 1]))
		(*n)--;
	while (*n && is_blank(**s)) {
		(*s)++;
		(*n)--;
	}
}

int
registry_device_import(struct registry *reg, const char *text, size_t len,
		       void (*cb)(void *arg, const char *id, const char *token),
		       void *arg, size_t *bad_line)
{
	struct registry__op op = {0};
	struct import_row *rows = NULL, *grown;
	size_t nrows = 0, cap = 0, pos = 0, line = 0, i;
	int64_t now = hub_clock_ms();
	int err;

	if (bad_line)
		*bad_line = 0;
	if (!reg || (!text && len))
		return HUB_ERR_INVAL;
	err = registry__op_begin(reg, &op);
	if (err != HUB_OK)
		goto out;
	while (pos < len) {
		const char *ln = text + pos, *nl, *comma, *name = NULL;
		size_t n, idlen, namelen = 0;

		nl = memchr(ln, '\n', len - pos);
		n = nl ? (size_t)(nl - ln) : len - pos;
		pos += n + (nl ? 1 : 0);
		line++;
		trim(&ln, &n);
		if (n == 0 || ln[0] == '#')
			continue;
		comma = memchr(ln, ',', n);
		idlen = comma ? (size_t)(comma - ln) : n;
		if (comma) {
			name = comma + 1;
			namelen = n - idlen - 1;
			trim(&name, &namelen);
		}
		trim(&ln, &idlen);
		if (!proto_id_valid(ln, idlen) ||
		    (name && !name_ok(name, namelen))) {
			err = registry__fail(reg, HUB_ERR_INVAL);
			goto bad;
		}
		if (nrows == cap) {
			cap = cap ? cap * 2 : 64;
			grown = realloc(rows, cap * sizeof(*rows));
			if (!grown) {
				err = registry__fail(reg, HUB_ERR_NOMEM);
				goto bad;
			}
			rows = grown;
		}
		err = insert_device(reg, ln, idlen, name, namelen, now,
				    rows[nrows].token);
		if (err != HUB_OK) {
			if (err == HUB_ERR_EXISTS)
				registry__fail(reg, err);
			goto bad;
		}
		memcpy(rows[nrows].id, ln, idlen);
		rows[nrows].id[idlen] = '\0';
		nrows++;
	}
	err = registry__op_end(reg, &op, HUB_OK);
	if (err != HUB_OK)
		goto out;
	/* Committed: only now do the tokens exist. */
	for (i = 0; cb && i < nrows; i++)
		cb(arg, rows[i].id, rows[i].token);
	goto out;
bad:
	if (bad_line)
		*bad_line = line;
out:
	registry__op_end(reg, &op, err);
	if (rows) {
		mbedtls_platform_zeroize(rows, cap * sizeof(*rows));
		free(rows);
	}
	return err;
}

/* ---- queries ---------------------------------------------------------- */

/* Row of DEVICE_SELECT (registry.c) into d. */
static void
fill_device(sqlite3_stmt *s, struct registry_device *d)
{
	memset(d, 0, sizeof(*d));
	registry__col_text(s, 0, d->id, sizeof(d->id));
	registry__col_text(s, 1, d->name, sizeof(d->name));
	d->disabled = sqlite3_column_int(s, 2) != 0;
	d->created = sqlite3_column_int64(s, 3);
	d->last_seen = sqlite3_column_int64(s, 4);
	d->online = sqlite3_column_type(s, 5) != SQLITE_NULL;
	registry__col_text(s, 5, d->session, sizeof(d->session));
	registry__col_text(s, 6, d->hub, sizeof(d->hub));
	registry__col_text(s, 7, d->addr, sizeof(d->addr));
}

int
registry_device_get(struct registry *reg, const char *id,
		    struct registry_device *out)
{
	sqlite3_stmt *s;
	int rc, err;

	if (!reg || !out)
		return HUB_ERR_INVAL;
	if (!id_ok(id))
		return registry__fail(reg, HUB_ERR_INVAL);
	s = registry__stmt(reg, ST_DEV_GET);
	sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		fill_device(s, out);
		err = HUB_OK;
	} else if (rc == SQLITE_DONE) {
		err = registry__fail(reg, HUB_ERR_NOTFOUND);
	} else {
		err = registry__sqlerr(reg, rc);
	}
	registry__reset(s);
	return err;
}

int
registry_device_list(struct registry *reg, int online_only,
		     void (*cb)(void *arg, const struct registry_device *d),
		     void *arg)
{
	struct registry_device d;
	sqlite3_stmt *s;
	int rc, err = HUB_OK;

	if (!reg || !cb)
		return HUB_ERR_INVAL;
	s = registry__stmt(reg, ST_DEV_LIST);
	sqlite3_bind_int(s, 1, online_only != 0);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		fill_device(s, &d);
		cb(arg, &d);
	}
	if (rc != SQLITE_DONE)
		err = registry__sqlerr(reg, rc);
	registry__reset(s);
	return err;
}

/* Runs a one-row UPDATE/DELETE keyed by id; NOTFOUND when no row matched. */
static int
change_device(struct registry *reg, enum registry_stmt st, const char *id,
	      const char *text, int num)
{
	sqlite3_stmt *s = registry__stmt(reg, st);
	int rc, err = HUB_OK;

	sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
	if (text)
		sqlite3_bind_text(s, 2, text, -1, SQLITE_STATIC);
	else if (st == ST_DEV_SET_DISABLED)
		sqlite3_bind_int(s, 2, num);
	rc = sqlite3_step(s);
	if (rc != SQLITE_DONE)
		err = registry__sqlerr(reg, rc);
	else if (sqlite3_changes(reg->db) == 0)
		err = registry__fail(reg, HUB_ERR_NOTFOUND);
	registry__reset(s);
	return err;
}

int
registry_device_set_disabled(struct registry *reg, const char *id, int disabled)
{
	if (!reg)
		return HUB_ERR_INVAL;
	if (!id_ok(id))
		return registry__fail(reg, HUB_ERR_INVAL);
	return change_device(reg, ST_DEV_SET_DISABLED, id, NULL, disabled != 0);
}

int
registry_device_delete(struct registry *reg, const char *id)
{
	if (!reg)
		return HUB_ERR_INVAL;
	if (!id_ok(id))
		return registry__fail(reg, HUB_ERR_INVAL);
	return change_device(reg, ST_DEV_DELETE, id, NULL, 0);
}

int
registry_device_rotate(struct registry *reg, const char *id, char *token)
{
	char hash[REGISTRY__HASH_STR_LEN + 1];
	int err;

	if (!reg || !token)
		return HUB_ERR_INVAL;
	token[0] = '\0';
	if (!id_ok(id))
		return registry__fail(reg, HUB_ERR_INVAL);
	err = registry_token_new(token);
	if (err != HUB_OK)
		goto out;
	err =
	    registry_token_hash(token, REGISTRY_TOKEN_LEN, hash, sizeof(hash));
	if (err != HUB_OK)
		goto out;
	err = change_device(reg, ST_DEV_SET_TOKEN, id, hash, 0);
out:
	if (err != HUB_OK)
		mbedtls_platform_zeroize(token, REGISTRY_TOKEN_LEN + 1);
	return err;
}
