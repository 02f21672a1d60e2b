/*
 * proto_topic.c - device ids, device topic rules, the namespaces the hub
 * keeps for itself, and the mapping between device-relative topics and
 * MQTT topics (docs/protocol.md "Topics"). Pure, any thread.
 *
 * The MQTT topic space is shared: devices publish under <prefix>/<id>/...,
 * the hub under hub/..., operators under groups/... and fleet/.... A
 * device must never reach the others' levels, so a topic is checked as a
 * device wrote it (no wildcard, no empty level, no escape with a leading
 * '/' or '$') and the prefix is checked once at start so that
 * <prefix>/<id> can never be hub/sessions, groups/g or fleet/cmd.
 */
#include "proto.h"

#include <string.h>

int
proto_id_valid(const char *s, size_t len)
{
	size_t i;

	if (!s || len < 1 || len > HUB_ID_MAX)
		return 0;
	for (i = 0; i < len; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

/* C0 (NUL included) and C1 control characters and DEL; s is valid UTF-8. */
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
proto_topic_valid(const char *t, size_t len)
{
	const unsigned char *s = (const unsigned char *)t;
	size_t i;

	if (!t || len < 1 || len > PROTO_TOPIC_MAX)
		return 0;
	if (s[0] == '$' || s[0] == '/' || s[len - 1] == '/')
		return 0;
	if (!proto_utf8_valid(s, len) || has_control(s, len))
		return 0;
	for (i = 0; i < len; i++) {
		if (s[i] == '+' || s[i] == '#')
			return 0;
		if (s[i] == '/' && i + 1 < len && s[i + 1] == '/')
			return 0;
	}
	return 1;
}

/* 1 if t[0..len)'s first level is word. */
static int
first_level_is(const char *t, size_t len, const char *word)
{
	size_t n = strlen(word);

	return len >= n && !memcmp(t, word, n) && (len == n || t[n] == '/');
}

int
proto_topic_reserved(const char *t, size_t len)
{
	/* the hub publishes presence to status and commands arrive on cmd/:
	 * a device must not forge either */
	return first_level_is(t, len, "status") ||
	       first_level_is(t, len, "cmd");
}

int
proto_topic_device_ok(const char *t, size_t len)
{
	return proto_topic_valid(t, len) && !proto_topic_reserved(t, len);
}

int
proto_prefix_valid(const char *prefix)
{
	static const char *const own[] = {PROTO_HUB_NS, "groups", "fleet"};
	size_t i, len;

	if (!prefix)
		return 0;
	len = strlen(prefix);
	if (!proto_topic_valid(prefix, len))
		return 0;
	for (i = 0; i < sizeof(own) / sizeof(own[0]); i++)
		if (first_level_is(prefix, len, own[i]))
			return 0;
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
proto_topic_up(const char *prefix, const char *device, const char *rel,
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
	if (!proto_id_valid(id, n))
		return HUB_ERR_INVAL;
	if (n >= devlen)
		return HUB_ERR_TOOBIG;
	memcpy(device, id, n);
	device[n] = '\0';
	return HUB_OK;
}

int
proto_topic_down(const char *prefix, const char *topic, char *device,
		 size_t devlen, const char **rel, int *is_session)
{
	size_t plen, slen = sizeof(PROTO_SESSIONS_PREFIX) - 1;
	const char *id, *slash;
	int rc;

	if (!prefix || !topic || !device || !devlen || !rel || !is_session)
		return HUB_ERR_INVAL;
	device[0] = '\0';
	*rel = NULL;
	*is_session = 0;
	if (strncmp(topic, PROTO_SESSIONS_PREFIX, slen) == 0) {
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
