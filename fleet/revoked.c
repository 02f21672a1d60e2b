/*
 * revoked.c - the revocations a hub knows: device id -> "signed tokens
 * issued before T are void", from the retained hub/revoked/{id} messages
 * (hubctl device disable|delete|rotate-token). A chained hash table that
 * grows; one per hubd worker, ONLY used from its service thread.
 *
 * The payload is {"before":T,"reason":"disabled|deleted|rotated|added"};
 * an empty retained message (hubctl device enable) clears the entry.
 * "disabled" and "deleted" void every token of the device whatever its
 * iat (a token signed in the same second as the revocation must not
 * survive it); "rotated" and "added" void those issued before T, and the
 * token hubctl issued with them carries iat = T.
 */
#include "fleet.h"

#include <cjson/cJSON.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rnode {
	struct rnode *next;
	int64_t before;
	int all;
	char id[HUB_ID_MAX + 1];
};

struct fleet_revoked {
	struct rnode **b;
	size_t mask, n;
};

int
fleet_revoked_new(struct fleet_revoked **out)
{
	struct fleet_revoked *r;

	*out = NULL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return HUB_ERR_NOMEM;
	r->mask = 255;
	r->b = calloc(r->mask + 1, sizeof(*r->b));
	if (!r->b) {
		free(r);
		return HUB_ERR_NOMEM;
	}
	*out = r;
	return HUB_OK;
}

void
fleet_revoked_free(struct fleet_revoked *r)
{
	size_t i;

	if (!r)
		return;
	for (i = 0; i <= r->mask; i++) {
		struct rnode *n = r->b[i], *next;

		for (; n; n = next) {
			next = n->next;
			free(n);
		}
	}
	free(r->b);
	free(r);
}

static struct rnode **
slot(const struct fleet_revoked *r, const char *id)
{
	struct rnode **p = &r->b[hub_hash_str(id) & r->mask];

	while (*p && strcmp((*p)->id, id))
		p = &(*p)->next;
	return p;
}

static void
grow(struct fleet_revoked *r)
{
	size_t nmask = r->mask * 2 + 1, i;
	struct rnode **nb = calloc(nmask + 1, sizeof(*nb));

	if (!nb)
		return; /* longer chains, still correct */
	for (i = 0; i <= r->mask; i++) {
		struct rnode *n = r->b[i], *next;

		for (; n; n = next) {
			size_t h = hub_hash_str(n->id) & nmask;

			next = n->next;
			n->next = nb[h];
			nb[h] = n;
		}
	}
	free(r->b);
	r->b = nb;
	r->mask = nmask;
}

int
fleet_revoked_set(struct fleet_revoked *r, const char *id, int64_t before,
		  int all)
{
	struct rnode **p, *n;
	size_t len = strnlen(id, HUB_ID_MAX + 1);

	if (!r || len > HUB_ID_MAX || !fleet_group_valid(id, len))
		return HUB_ERR_INVAL;
	p = slot(r, id);
	if (!before) {
		n = *p;
		if (n) {
			*p = n->next;
			free(n);
			r->n--;
		}
		return HUB_OK;
	}
	if (*p) {
		(*p)->before = before;
		(*p)->all = all;
		return HUB_OK;
	}
	n = calloc(1, sizeof(*n));
	if (!n)
		return HUB_ERR_NOMEM;
	memcpy(n->id, id, len + 1);
	n->before = before;
	n->all = all;
	*p = n;
	if (++r->n > (r->mask + 1) * 2)
		grow(r);
	return HUB_OK;
}

int64_t
fleet_revoked_before(const struct fleet_revoked *r, const char *id)
{
	struct rnode *n;

	if (!r)
		return 0;
	n = *slot(r, id);
	return n ? n->before : 0;
}

int
fleet_revoked_voids(const struct fleet_revoked *r, const char *id, int64_t iat)
{
	struct rnode *n;

	if (!r)
		return 0;
	n = *slot(r, id);
	return n && (n->all || iat < n->before);
}

size_t
fleet_revoked_count(const struct fleet_revoked *r)
{
	return r ? r->n : 0;
}

int
fleet_revocation_parse(const void *payload, size_t len, int64_t *before,
		       int *all, char *reason, size_t cap)
{
	cJSON *o;
	const cJSON *b, *why;
	int rc = HUB_ERR_INVAL;

	*before = 0;
	*all = 0;
	if (reason && cap)
		reason[0] = '\0';
	if (!len)
		return HUB_OK; /* cleared */
	if (len > 256)
		return HUB_ERR_TOOBIG;
	o = cJSON_ParseWithLength(payload, len);
	if (!cJSON_IsObject(o))
		goto out;
	b = cJSON_GetObjectItemCaseSensitive(o, "before");
	if (!cJSON_IsNumber(b) || !(b->valuedouble > 0) ||
	    b->valuedouble > 9007199254740992.0 ||
	    floor(b->valuedouble) != b->valuedouble)
		goto out;
	why = cJSON_GetObjectItemCaseSensitive(o, "reason");
	if (why && (!cJSON_IsString(why) || strlen(why->valuestring) >= 16))
		goto out;
	if (why && reason && cap)
		snprintf(reason, cap, "%s", why->valuestring);
	*all = why && (!strcmp(why->valuestring, "disabled") ||
		       !strcmp(why->valuestring, "deleted"));
	*before = (int64_t)b->valuedouble;
	rc = HUB_OK;
out:
	cJSON_Delete(o);
	return rc;
}
