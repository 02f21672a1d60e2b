/*
 * frame.c - device protocol v1 frames; see frame.h. Pure, any thread.
 *
 * Text frames are parsed with cJSON after two cheap bounds that cJSON does
 * not give us: a nesting-depth scan (cJSON's own limit is 1000, far more
 * than a device needs and a stack risk) and the caller's frame-size cap.
 * The payload of a pub is taken as the exact bytes the device sent (found by
 * a small scanner over the already-validated object), so numbers keep their
 * precision and spelling; only a JSON string is unwrapped to its UTF-8.
 */
#include "frame.h"
#include "bridge.h"
#include "hub_err.h"

#include <cjson/cJSON.h>

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int
depth_ok(const char *p, size_t len)
{
	int depth = 0, in_str = 0;
	size_t i;

	for (i = 0; i < len; i++) {
		char c = p[i];

		if (in_str) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_str = 0;
			continue;
		}
		if (c == '"')
			in_str = 1;
		else if (c == '{' || c == '[') {
			if (++depth > FRAME_MAX_DEPTH)
				return 0;
		} else if (c == '}' || c == ']')
			depth--;
	}
	return 1;
}

static const char *
skip_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/* Past one JSON value; input already validated by cJSON. */
static const char *
skip_value(const char *p, const char *end)
{
	int depth = 0, in_str = 0;

	if (p < end && *p == '"') {
		for (p++; p < end; p++) {
			if (*p == '\\')
				p++;
			else if (*p == '"')
				return p + 1;
		}
		return end;
	}
	if (p < end && (*p == '{' || *p == '[')) {
		for (; p < end; p++) {
			char c = *p;

			if (in_str) {
				if (c == '\\')
					p++;
				else if (c == '"')
					in_str = 0;
			} else if (c == '"')
				in_str = 1;
			else if (c == '{' || c == '[')
				depth++;
			else if ((c == '}' || c == ']') && --depth == 0)
				return p + 1;
		}
		return end;
	}
	while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' &&
	       *p != '\t' && *p != '\n' && *p != '\r')
		p++;
	return p;
}

/* The raw span of the first top-level "payload" member, or 0. */
static int
payload_span(const char *buf, size_t len, const char **vs, size_t *vl)
{
	const char *p = buf, *end = buf + len, *k, *ke, *v;

	p = skip_ws(p, end);
	if (p >= end || *p != '{')
		return 0;
	p++;
	for (;;) {
		p = skip_ws(p, end);
		if (p >= end || *p != '"')
			return 0;
		k = p;
		ke = skip_value(p, end);
		p = skip_ws(ke, end);
		if (p >= end || *p != ':')
			return 0;
		v = skip_ws(p + 1, end);
		p = skip_value(v, end);
		if (ke - k == 9 && !memcmp(k, "\"payload\"", 9)) {
			*vs = v;
			*vl = (size_t)(p - v);
			return 1;
		}
		p = skip_ws(p, end);
		if (p >= end || *p != ',')
			return 0;
		p++;
	}
}

/*
 * The first levels the hub itself publishes under devices/{id}/: a device
 * must not forge its own presence ("status") or fake a command ("cmd/...").
 */
static int
reserved_topic(const char *t, size_t len)
{
	static const char *const res[] = {"status", "cmd"};
	size_t i, n;

	for (i = 0; i < sizeof(res) / sizeof(res[0]); i++) {
		n = strlen(res[i]);
		if (len >= n && !memcmp(t, res[i], n) &&
		    (len == n || t[n] == '/'))
			return 1;
	}
	return 0;
}

static int
device_topic_ok(const char *t, size_t len)
{
	return bridge_topic_valid(t, len) && !reserved_topic(t, len);
}

static int
get_id(const cJSON *root, struct frame_in *in)
{
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(root, "id");
	double d;

	if (!id)
		return 0;
	if (!cJSON_IsNumber(id))
		return -1;
	d = id->valuedouble;
	if (!(d >= 0 && d <= 4294967295.0) || floor(d) != d)
		return -1;
	in->id = (uint32_t)d;
	in->has_id = 1;
	return 1;
}

int
frame_parse_text(const char *buf, size_t len, struct frame_in *in,
		 const char **code, const char **msg)
{
	const cJSON *op, *topic, *qos, *payload;
	cJSON *root = NULL;
	const char *end = NULL;
	int rc = HUB_ERR_INVAL, idr;

	memset(in, 0, sizeof(*in));
	*code = FRAME_E_BAD_FRAME;
	*msg = "not a JSON object";
	if (!depth_ok(buf, len)) {
		*msg = "nesting too deep";
		goto out;
	}
	root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
	if (!root || !cJSON_IsObject(root) ||
	    skip_ws(end, buf + len) != buf + len)
		goto out;
	idr = get_id(root, in);
	if (idr < 0) {
		*msg = "id must be an integer 0..4294967295";
		goto out;
	}
	op = cJSON_GetObjectItemCaseSensitive(root, "op");
	if (!cJSON_IsString(op)) {
		*msg = "missing op";
		goto out;
	}
	if (!strcmp(op->valuestring, "ping")) {
		in->op = FRAME_PING;
		rc = HUB_OK;
		goto out;
	}
	if (!strcmp(op->valuestring, "pong")) {
		in->op = FRAME_PONG;
		rc = HUB_OK;
		goto out;
	}
	if (!strcmp(op->valuestring, "ack")) {
		if (!in->has_id) {
			*msg = "ack needs an id";
			goto out;
		}
		in->op = FRAME_ACK;
		rc = HUB_OK;
		goto out;
	}
	if (strcmp(op->valuestring, "pub")) {
		*msg = "unknown op";
		goto out;
	}
	in->op = FRAME_PUB;
	qos = cJSON_GetObjectItemCaseSensitive(root, "qos");
	if (qos && !(cJSON_IsNumber(qos) &&
		     (qos->valuedouble == 0 || qos->valuedouble == 1))) {
		*msg = "qos must be 0 or 1";
		goto out;
	}
	in->qos = qos ? (int)qos->valuedouble : 0;
	if (in->qos == 1 && !in->has_id) {
		*msg = "qos 1 needs an id";
		goto out;
	}
	topic = cJSON_GetObjectItemCaseSensitive(root, "topic");
	if (!cJSON_IsString(topic)) {
		*msg = "missing topic";
		goto out;
	}
	if (!device_topic_ok(topic->valuestring, strlen(topic->valuestring))) {
		*code = FRAME_E_BAD_TOPIC;
		*msg = "topic must be 1..256 bytes of UTF-8, no empty level, "
		       "+, #, leading $ or /, not status or cmd/...";
		goto out;
	}
	memcpy(in->topic, topic->valuestring, strlen(topic->valuestring) + 1);
	payload = cJSON_GetObjectItemCaseSensitive(root, "payload");
	if (!payload) {
		*msg = "missing payload";
		goto out;
	}
	if (cJSON_IsString(payload)) {
		size_t n = strlen(payload->valuestring);

		in->payload = malloc(n + 1);
		if (!in->payload) {
			rc = HUB_ERR_NOMEM;
			goto out;
		}
		memcpy(in->payload, payload->valuestring, n + 1);
		in->payload_len = n;
	} else {
		const char *vs;
		size_t vl;

		if (payload_span(buf, len, &vs, &vl)) {
			in->payload = malloc(vl + 1);
			if (!in->payload) {
				rc = HUB_ERR_NOMEM;
				goto out;
			}
			memcpy(in->payload, vs, vl);
			in->payload[vl] = '\0';
			in->payload_len = vl;
		} else {
			/* an escaped key spelling: let cJSON print the value */
			in->payload = cJSON_PrintUnformatted(payload);
			if (!in->payload) {
				rc = HUB_ERR_NOMEM;
				goto out;
			}
			in->payload_len = strlen(in->payload);
		}
	}
	rc = HUB_OK;
out:
	cJSON_Delete(root);
	if (rc == HUB_OK) {
		*code = NULL;
		*msg = NULL;
	}
	return rc;
}

int
frame_parse_binary(const uint8_t *buf, size_t len, char *topic, size_t topiclen,
		   const uint8_t **payload, size_t *payload_len,
		   const char **code)
{
	size_t l;

	*code = FRAME_E_BAD_FRAME;
	if (len < 1 || buf[0] == 0 || (size_t)buf[0] + 1 > len)
		return HUB_ERR_INVAL;
	l = buf[0];
	if (l + 1 > topiclen)
		return HUB_ERR_TOOBIG;
	if (!device_topic_ok((const char *)buf + 1, l)) {
		*code = FRAME_E_BAD_TOPIC;
		return HUB_ERR_INVAL;
	}
	memcpy(topic, buf + 1, l);
	topic[l] = '\0';
	*payload = buf + 1 + l;
	*payload_len = len - 1 - l;
	*code = NULL;
	return HUB_OK;
}

static size_t
fit(int n, size_t cap)
{
	return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

size_t
frame_ack(char *out, size_t cap, uint32_t id)
{
	return fit(
	    snprintf(out, cap, "{\"op\":\"ack\",\"id\":%" PRIu32 "}", id), cap);
}

size_t
frame_pong(char *out, size_t cap)
{
	return fit(snprintf(out, cap, "{\"op\":\"pong\"}"), cap);
}

/* JSON string body of s (no quotes); returns bytes written or SIZE_MAX. */
static size_t
escape(char *out, size_t cap, const unsigned char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0, i;

	for (i = 0; i < len; i++) {
		unsigned char c = s[i];

		if (o + 6 >= cap)
			return SIZE_MAX;
		if (c == '"' || c == '\\') {
			out[o++] = '\\';
			out[o++] = (char)c;
		} else if (c < 0x20 || c == 0x7f) {
			out[o++] = '\\';
			out[o++] = 'u';
			out[o++] = '0';
			out[o++] = '0';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		} else
			out[o++] = (char)c;
	}
	return o;
}

size_t
frame_err(char *out, size_t cap, int has_id, uint32_t id, const char *code,
	  const char *msg)
{
	char m[512];
	size_t ml =
	    escape(m, sizeof(m), (const unsigned char *)msg, strlen(msg));

	if (ml == SIZE_MAX)
		ml = 0;
	if (has_id)
		return fit(snprintf(out, cap,
				    "{\"op\":\"err\",\"id\":%" PRIu32
				    ",\"code\":\"%s\",\"msg\":\"%.*s\"}",
				    id, code, (int)ml, m),
			   cap);
	return fit(snprintf(out, cap,
			    "{\"op\":\"err\",\"code\":\"%s\",\"msg\":\"%.*s\"}",
			    code, (int)ml, m),
		   cap);
}

size_t
frame_msg_bound(const char *topic, size_t len)
{
	return 64 + 6 * strlen(topic) + 6 * len + 24;
}

size_t
frame_msg(char *out, size_t cap, const char *topic, const void *payload,
	  size_t len, int kind, int64_t id)
{
	size_t o, n;
	int r;

	r = snprintf(out, cap, "{\"op\":\"msg\",\"topic\":\"");
	if (!fit(r, cap))
		return 0;
	o = (size_t)r;
	n = escape(out + o, cap - o, (const unsigned char *)topic,
		   strlen(topic));
	if (n == SIZE_MAX)
		return 0;
	o += n;
	if (cap - o < 16)
		return 0;
	memcpy(out + o, "\",\"payload\":", 12);
	o += 12;
	if (kind == 0) {
		if (cap - o <= len)
			return 0;
		memcpy(out + o, payload, len);
		o += len;
	} else {
		out[o++] = '"';
		n = escape(out + o, cap - o, payload, len);
		if (n == SIZE_MAX)
			return 0;
		o += n;
		if (cap - o < 2)
			return 0;
		out[o++] = '"';
	}
	if (id >= 0)
		r = snprintf(out + o, cap - o, ",\"id\":%" PRId64 "}", id);
	else
		r = snprintf(out + o, cap - o, "}");
	if (!fit(r, cap - o))
		return 0;
	return o + (size_t)r;
}

size_t
frame_binary(uint8_t *out, size_t cap, const char *topic, const void *payload,
	     size_t len)
{
	size_t tl = strlen(topic);

	if (tl < 1 || tl > 255 || cap < 1 + tl + len)
		return 0;
	out[0] = (uint8_t)tl;
	memcpy(out + 1, topic, tl);
	memcpy(out + 1 + tl, payload, len);
	return 1 + tl + len;
}
