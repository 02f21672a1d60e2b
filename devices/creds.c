/*
 * creds.c - the credential snapshot: every device's stored token hash in an
 * immutable open-addressing hash table, so the service thread checks a
 * token without touching SQLite.
 *
 * Design: entries live in one dense array (64 bytes each: fingerprint,
 * salt and digest already decoded from hex, id offset and length, flags);
 * ids live in one string arena; the table is a power-of-two array of
 * uint32 entry indices (+1, 0 = empty) probed linearly from FNV-1a(id), at
 * most half full. 100k devices take about 6.4 MB of entries, 1 MB of slots
 * and the id bytes. A check always hashes the presented token once -
 * against a random dummy salt and digest when the id is unknown - and
 * compares full digests with mbedtls_ct_memcmp, so neither the token nor
 * the existence of the id shows in the timing beyond the table probe.
 *
 * Threads: built by registry_creds_load() on the thread that owns the
 * struct registry (hubd: the registry writer), then never written: any
 * number of threads may read it until registry_creds_free().
 */
#include "proto.h"
#include "registry_int.h"

#include <stdlib.h>
#include <string.h>

#include <mbedtls/constant_time.h>
#include <mbedtls/platform_util.h>

#define CRED_DISABLED 1u
#define CRED_BADHASH 2u /* stored hash unparsable: never authenticates */

struct cred {
	uint64_t fp;
	unsigned char salt[REGISTRY__SALT_LEN];
	unsigned char digest[REGISTRY__DIGEST_LEN];
	uint32_t id_off; /* the id, then its groups ("a,b"), in ids[] */
	uint8_t id_len;
	uint8_t flags;
	uint16_t grp_len;
};

struct registry_creds {
	struct cred *e;
	size_t n;
	uint32_t *slot; /* entry index + 1; 0 = empty */
	size_t mask;	/* slots - 1 */
	char *ids;	/* arena of the ids, not NUL-terminated */
	unsigned char dummy_salt[REGISTRY__SALT_LEN];
	unsigned char dummy_digest[REGISTRY__DIGEST_LEN];
};

static uint64_t
fnv1a(const void *p, size_t n)
{
	const unsigned char *b = p;
	uint64_t h = 1469598103934665603ull;
	size_t i;

	for (i = 0; i < n; i++) {
		h ^= b[i];
		h *= 1099511628211ull;
	}
	return h;
}

static const struct cred *
find(const struct registry_creds *c, const char *id)
{
	size_t len, i;
	uint32_t v;

	if (!c || !id || !c->slot)
		return NULL;
	len = strnlen(id, HUB_ID_MAX + 1);
	if (len == 0 || len > HUB_ID_MAX)
		return NULL;
	for (i = fnv1a(id, len) & c->mask; (v = c->slot[i]) != 0;
	     i = (i + 1) & c->mask) {
		const struct cred *e = &c->e[v - 1];

		if (e->id_len == len && !memcmp(c->ids + e->id_off, id, len))
			return e;
	}
	return NULL;
}

/* Grows *p (of *cap elements of size sz) to hold need elements. */
static int
grow(void **p, size_t *cap, size_t need, size_t sz)
{
	size_t ncap = *cap ? *cap : 1024;
	void *q;

	if (need <= *cap)
		return HUB_OK;
	while (ncap < need)
		ncap *= 2;
	q = realloc(*p, ncap * sz);
	if (!q)
		return HUB_ERR_NOMEM;
	*p = q;
	*cap = ncap;
	return HUB_OK;
}

static int
build_table(struct registry_creds *c)
{
	size_t cap = 16, i, j;

	while (cap < c->n * 2)
		cap *= 2;
	c->slot = calloc(cap, sizeof(*c->slot));
	if (!c->slot)
		return HUB_ERR_NOMEM;
	c->mask = cap - 1;
	for (i = 0; i < c->n; i++) {
		const struct cred *e = &c->e[i];

		for (j = fnv1a(c->ids + e->id_off, e->id_len) & c->mask;
		     c->slot[j]; j = (j + 1) & c->mask)
			;
		c->slot[j] = (uint32_t)(i + 1);
	}
	return HUB_OK;
}

int
registry_creds_load(struct registry *reg, struct registry_creds **out)
{
	struct registry_creds *c = NULL;
	size_t ecap = 0, acap = 0, alen = 0;
	sqlite3_stmt *s = NULL;
	int rc, err;

	if (out)
		*out = NULL;
	if (!reg || !out)
		return HUB_ERR_INVAL;
	c = calloc(1, sizeof(*c));
	if (!c) {
		err = registry__fail(reg, HUB_ERR_NOMEM);
		goto out;
	}
	err = registry__random(c->dummy_salt, sizeof(c->dummy_salt));
	if (err == HUB_OK)
		err =
		    registry__random(c->dummy_digest, sizeof(c->dummy_digest));
	if (err != HUB_OK) {
		registry__fail(reg, err);
		goto out;
	}
	s = registry__stmt(reg, ST_CREDS_ALL);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		const char *id = (const char *)sqlite3_column_text(s, 0);
		size_t idlen = (size_t)sqlite3_column_bytes(s, 0);
		const char *h = (const char *)sqlite3_column_text(s, 1);
		size_t hlen = (size_t)sqlite3_column_bytes(s, 1);
		const char *g = (const char *)sqlite3_column_text(s, 3);
		size_t glen = g ? (size_t)sqlite3_column_bytes(s, 3) : 0;
		struct cred *e;

		/* Ids are validated on insert; a hand-edited row is skipped. */
		if (!id || !proto_id_valid(id, idlen))
			continue;
		if (glen > REGISTRY_CREDS_GROUPS_MAX)
			glen = 0; /* more groups than a session carries */
		if (c->n >= UINT32_MAX - 1 ||
		    alen + idlen + glen > UINT32_MAX ||
		    grow((void **)&c->e, &ecap, c->n + 1, sizeof(*c->e)) ||
		    grow((void **)&c->ids, &acap, alen + idlen + glen, 1)) {
			err = registry__fail(reg, HUB_ERR_NOMEM);
			goto out;
		}
		e = &c->e[c->n];
		memset(e, 0, sizeof(*e));
		memcpy(c->ids + alen, id, idlen);
		e->id_off = (uint32_t)alen;
		e->id_len = (uint8_t)idlen;
		alen += idlen;
		if (glen)
			memcpy(c->ids + alen, g, glen);
		e->grp_len = (uint16_t)glen;
		alen += glen;
		if (registry__hash_parse(h, h ? hlen : 0, e->salt, e->digest))
			e->flags |= CRED_BADHASH;
		if (sqlite3_column_int(s, 2))
			e->flags |= CRED_DISABLED;
		e->fp = h ? fnv1a(h, hlen) : 0;
		if (e->fp == 0)
			e->fp = 1;
		c->n++;
	}
	if (rc != SQLITE_DONE) {
		err = registry__sqlerr(reg, rc);
		goto out;
	}
	/* The doubling slack is up to half the array: give it back. */
	if (c->n && c->n < ecap) {
		struct cred *fit = realloc(c->e, c->n * sizeof(*c->e));

		if (fit)
			c->e = fit;
	}
	err = build_table(c);
	if (err != HUB_OK) {
		registry__fail(reg, err);
		goto out;
	}
	*out = c;
	c = NULL;
out:
	registry__reset(s);
	registry_creds_free(c);
	return err;
}

const char *
registry_creds_groups(const struct registry_creds *c, const char *id,
		      size_t *len)
{
	const struct cred *e = find(c, id);

	*len = e ? e->grp_len : 0;
	return e && e->grp_len ? c->ids + e->id_off + e->id_len : NULL;
}

void
registry_creds_free(struct registry_creds *c)
{
	if (!c)
		return;
	if (c->e) {
		mbedtls_platform_zeroize(c->e, c->n * sizeof(*c->e));
		free(c->e);
	}
	free(c->ids);
	free(c->slot);
	free(c);
}

int
registry_creds_refresh(struct registry *reg, int64_t *data_version,
		       int64_t *devices_rev, struct registry_creds **out)
{
	int64_t dv, rev;
	int err;

	if (out)
		*out = NULL;
	if (!reg || !data_version || !devices_rev || !out)
		return HUB_ERR_INVAL;
	err = registry_data_version(reg, &dv);
	if (err != HUB_OK || dv == *data_version)
		return err;
	err = registry_devices_rev(reg, &rev);
	if (err != HUB_OK)
		return err;
	if (rev == *devices_rev) {
		/* another connection wrote sessions or events: no reload */
		*data_version = dv;
		return HUB_OK;
	}
	err = registry_creds_load(reg, out);
	if (err != HUB_OK)
		return err;
	*data_version = dv;
	*devices_rev = rev;
	return HUB_OK;
}

size_t
registry_creds_count(const struct registry_creds *c)
{
	return c ? c->n : 0;
}

int
registry_creds_check(const struct registry_creds *c, const char *id,
		     const char *token, size_t token_len)
{
	static const unsigned char zero[REGISTRY__DIGEST_LEN];
	unsigned char got[REGISTRY__DIGEST_LEN];
	const struct cred *e = find(c, id);
	const unsigned char *salt, *want;
	int same;

	/* Unknown ids hash too: the work does not reveal existence. */
	salt = e ? e->salt : c ? c->dummy_salt : zero;
	want = e ? e->digest : c ? c->dummy_digest : zero;
	if (!token)
		token_len = 0;
	if (registry__digest(salt, token ? token : "", token_len, got))
		return HUB_ERR_AUTH;
	same = mbedtls_ct_memcmp(got, want, sizeof(got)) == 0;
	mbedtls_platform_zeroize(got, sizeof(got));
	if (!e || !same || (e->flags & CRED_BADHASH))
		return HUB_ERR_AUTH;
	if (e->flags & CRED_DISABLED)
		return HUB_ERR_DISABLED;
	return HUB_OK;
}

uint64_t
registry_creds_fingerprint(const struct registry_creds *c, const char *id,
			   int *disabled)
{
	const struct cred *e = find(c, id);

	if (disabled)
		*disabled = e ? (e->flags & CRED_DISABLED) != 0 : 0;
	return e ? e->fp : 0;
}
