/*
 * fleet_auth.c - signed fleet tokens in hubd: the auth hook that auth.c
 * calls when the registry does not know a token, and the revocations that
 * arrive as retained hub/revoked/{id} messages.
 *
 * A signed token (fleet/, JWT ES256) is accepted for /v1/devices/{sub} on
 * any hub holding the fleet's public key (--token-key), whether or not its
 * registry knows the device; the session's first registry row then creates
 * the device locally (writer item create_device). The local registry still
 * has the last word on "disabled" (403); revocations reach every hub
 * through the broker within a round trip.
 *
 * Threads: everything here runs on the worker's service thread; the keys
 * and the revocation table are this worker's own.
 */
#include "hub_int.h"
#include "fleet.h"
#include "hub_log.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

int
hub__fleet_init(struct worker *w, char *err, size_t errlen)
{
	char why[256];
	int rc;

	w->fleet_keys = NULL;
	w->revoked = NULL;
	if (!w->conf->token_key[0])
		return HUB_OK;
	rc = fleet_keys_load(w->conf->token_key, &w->fleet_keys, why,
			     sizeof(why));
	if (rc) {
		snprintf(err, errlen, "--token-key: %s", why);
		return rc;
	}
	rc = fleet_revoked_new(&w->revoked);
	if (rc) {
		fleet_keys_free(w->fleet_keys);
		w->fleet_keys = NULL;
		snprintf(err, errlen, "out of memory");
	}
	return rc;
}

void
hub__fleet_free(struct worker *w)
{
	fleet_keys_free(w->fleet_keys);
	fleet_revoked_free(w->revoked);
	w->fleet_keys = NULL;
	w->revoked = NULL;
}

int
hub__fleet_auth(struct worker *w, const char *id, const char *tok, size_t len,
		int64_t *iat)
{
	struct fleet_claims c;
	int disabled = 0;

	HUB_ASSERT_THREAD(&w->service);
	*iat = 0;
	if (!w->fleet_keys || !fleet_jwt_shape(tok, len))
		return HUB_ERR_AUTH;
	if (fleet_token_verify(w->fleet_keys, id, tok, len, (int64_t)time(NULL),
			       &c) != HUB_OK)
		return HUB_ERR_AUTH;
	if (fleet_revoked_voids(w->revoked, id, c.iat)) {
		hub_log(HUB_LOG_INFO, "HUB-TOKEN-REVOKED", "device=%s iat=%lld",
			id, (long long)c.iat);
		return HUB_ERR_AUTH;
	}
	/* this hub's registry may know and have disabled the device */
	if (registry_creds_fingerprint(w->creds, id, &disabled) && disabled)
		return HUB_ERR_DISABLED;
	/* 0 means "opaque" to the session: a real iat is never 0 */
	*iat = c.iat;
	hub__groups_set(w->pending.groups, c.groups, c.ngroups);
	return HUB_OK;
}

int
hub__fleet_revoked(struct worker *w, const struct bridge_ev *e, int *code)
{
	char reason[16];
	int64_t before;
	int all;

	HUB_ASSERT_THREAD(&w->service);
	*code = 1008;
	if (!w->revoked)
		return 0;
	if (fleet_revocation_parse(e->payload, e->len, &before, &all, reason,
				   sizeof(reason)) != HUB_OK) {
		hub_log(HUB_LOG_WARN, "HUB-REVOKED-BAD",
			"malformed hub/revoked/%s ignored", e->device);
		return 0;
	}
	if (fleet_revoked_set(w->revoked, e->device, before, all) != HUB_OK)
		hub_log(HUB_LOG_ERR, "HUB-REVOKED-NOMEM", "device=%s",
			e->device);
	if (!strcmp(reason, "disabled"))
		*code = 4003;
	return before != 0;
}

int
hub__fleet_session_void(struct worker *w, const char *id, int64_t iat)
{
	HUB_ASSERT_THREAD(&w->service);
	return fleet_revoked_voids(w->revoked, id, iat);
}
