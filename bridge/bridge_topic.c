/*
 * bridge_topic.c - device topic rules and the mapping between device-
 * relative topics and MQTT topics (DESIGN.md "MQTT mapping").
 *
 * Pure functions: no I/O, no state, safe from any thread. Built into the
 * bridge library and unit-tested alone in tests/unit/test_bridge.c.
 */
#include "bridge.h"

#include <string.h>

#define SESSIONS_PREFIX "hub/sessions/"

/* Rejects C0 and C1 control characters and DEL; input is valid UTF-8. */
static int
has_control(const unsigned char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		if (s[i] < 0x20 || s[i] == 0x7f)
			return 1;
		/* U+0080..U+009F encode as C2 80..C2 9F */
		if (s[i] == 0xc2 && i + 1 < len && s[i + 1] >= 0x80 &&
		    s[i + 1] <= 0x9f)
			return 1;
	}
	return 0;
}

int
bridge_topic_valid(const char *t, size_t len)
{
	const unsigned char *s = (const unsigned char *)t;
	size_t i;

	if (!t || len < 1 || len > BRIDGE_TOPIC_MAX)
		return 0;
	if (s[0] == '$' || s[0] == '/' || s[len - 1] == '/')
		return 0;
	if (!bridge_utf8_valid(s, len) || has_control(s, len))
		return 0;
	for (i = 0; i < len; i++) {
		if (s[i] == '+' || s[i] == '#')
			return 0;
		if (s[i] == '/' && i + 1 < len && s[i + 1] == '/')
			return 0;
	}
	return 1;
}

/* Appends src[0..n) at *pos; 0 when it does not fit (leaving room for NUL). */
static int
put(char *out, size_t outlen, size_t *pos, const char *src, size_t n)
{
	if (n >= outlen - *pos)
		return 0;
	memcpy(out + *pos, src, n);
	*pos += n;
	return 1;
}

int
bridge_topic_up(const char *prefix, const char *device, const char *rel,
		char *out, size_t outlen)
{
	size_t pos = 0;

	if (!prefix || !device || !rel || !out || !outlen)
		return HUB_ERR_INVAL;
	out[0] = '\0';
	if (!put(out, outlen, &pos, prefix, strlen(prefix)) ||
	    !put(out, outlen, &pos, "/", 1) ||
	    !put(out, outlen, &pos, device, strlen(device)) ||
	    !put(out, outlen, &pos, "/", 1) ||
	    !put(out, outlen, &pos, rel, strlen(rel))) {
		out[0] = '\0';
		return HUB_ERR_TOOBIG;
	}
	out[pos] = '\0';
	return HUB_OK;
}

static int
copy_id(const char *id, size_t n, char *device, size_t devlen)
{
	if (!hub_id_valid(id, n))
		return HUB_ERR_INVAL;
	if (n >= devlen)
		return HUB_ERR_TOOBIG;
	memcpy(device, id, n);
	device[n] = '\0';
	return HUB_OK;
}

int
bridge_topic_down(const char *prefix, const char *topic, char *device,
		  size_t devlen, const char **rel, int *is_session)
{
	size_t plen, slen = sizeof(SESSIONS_PREFIX) - 1;
	const char *id, *slash;
	int rc;

	if (!prefix || !topic || !device || !devlen || !rel || !is_session)
		return HUB_ERR_INVAL;
	device[0] = '\0';
	*rel = NULL;
	*is_session = 0;
	if (strncmp(topic, SESSIONS_PREFIX, slen) == 0) {
		id = topic + slen;
		rc = copy_id(id, strlen(id), device, devlen);
		if (rc != HUB_OK)
			return rc;
		*rel = id + strlen(id); /* "" */
		*is_session = 1;
		return HUB_OK;
	}
	plen = strlen(prefix);
	if (!plen || strncmp(topic, prefix, plen) != 0 || topic[plen] != '/')
		return HUB_ERR_INVAL;
	id = topic + plen + 1;
	slash = strchr(id, '/');
	if (!slash)
		return HUB_ERR_INVAL;
	/* "cmd/x": a bare "cmd" (which cmd/# also matches) or "cmd/" is not
	 * a command topic */
	if (strncmp(slash + 1, "cmd/", 4) != 0 || slash[5] == '\0')
		return HUB_ERR_INVAL;
	rc = copy_id(id, (size_t)(slash - id), device, devlen);
	if (rc != HUB_OK)
		return rc;
	*rel = slash + 1;
	return HUB_OK;
}
