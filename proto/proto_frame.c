/*
 * proto_frame.c - device protocol v1 frames (docs/protocol.md "Frames"):
 * the text envelope and the binary frame a device sends, and the frames
 * the hub sends. Pure, any thread.
 *
 * A text frame is scanned once by the strict JSON scanner (proto_json.c):
 * member names are decoded, the five members the protocol knows are
 * remembered as spans of the original text, everything else is only
 * validated. No tree is built and the payload is not copied: a non-string
 * payload is the span exactly as the device wrote it (numbers keep their
 * spelling and precision), a string payload is the span between the quotes
 * unless it has escapes, and only then is it decoded into a buffer of its
 * own. Text that is not JSON by RFC 8259 is refused whole, so nothing is
 * acked or published that a strict parser would reject.
 */
#include "proto_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum member { M_OP, M_TOPIC, M_QOS, M_ID, M_PAYLOAD, M_COUNT };

static int
member_of(const char *k, size_t n)
{
	static const char *const names[M_COUNT] = {"op", "topic", "qos", "id",
						   "payload"};
	int m;

	for (m = 0; m < M_COUNT; m++)
		if (strlen(names[m]) == n && !memcmp(names[m], k, n))
			return m;
	return -1;
}

/* An id: a JSON number that is an integer 0..4294967295, written plainly. */
static int
parse_id(const unsigned char *s, size_t a, size_t b, uint32_t *id)
{
	uint64_t v = 0;
	size_t k;

	if (a >= b || b - a > 10)
		return 0;
	for (k = a; k < b; k++) {
		if (s[k] < '0' || s[k] > '9')
			return 0;
		v = v * 10 + (uint64_t)(s[k] - '0');
	}
	if (v > UINT32_MAX)
		return 0;
	*id = (uint32_t)v;
	return 1;
}

int
proto_frame_parse_text(const char *buf, size_t len, struct proto_frame *f,
		       const char **code, const char **msg)
{
	const unsigned char *s = (const unsigned char *)buf;
	size_t vs[M_COUNT] = {0}, ve[M_COUNT] = {0}, i, n;
	unsigned seen = 0;
	char key[16], op[8];
	int r, rc = HUB_ERR_INVAL;

	memset(f, 0, sizeof(*f));
	*code = PROTO_E_BAD_FRAME;
	*msg = "not a JSON object";
	if (!buf)
		return HUB_ERR_INVAL;
	i = proto__ws(s, len, 0);
	if (i >= len || s[i] != '{')
		return HUB_ERR_INVAL;
	i = proto__ws(s, len, i + 1);
	if (i < len && s[i] == '}')
		i++;
	else
		for (;;) {
			int m;

			if (!proto__string(s, len, &i, key, sizeof(key), &n)) {
				*msg = "not JSON (RFC 8259)";
				return HUB_ERR_INVAL;
			}
			m = n <= sizeof(key) ? member_of(key, n) : -1;
			i = proto__ws(s, len, i);
			if (i >= len || s[i] != ':') {
				*msg = "not JSON (RFC 8259)";
				return HUB_ERR_INVAL;
			}
			i = proto__ws(s, len, i + 1);
			if (m >= 0) {
				if (seen & (1u << m)) {
					*msg = "a member appears twice";
					return HUB_ERR_INVAL;
				}
				seen |= 1u << m;
				vs[m] = i;
			}
			r = proto__value(s, len, &i, 1, PROTO_FRAME_MAX_DEPTH);
			if (r != 1) {
				*msg = r < 0 ? "nesting too deep"
					     : "not JSON (RFC 8259)";
				return HUB_ERR_INVAL;
			}
			if (m >= 0)
				ve[m] = i;
			i = proto__ws(s, len, i);
			if (i < len && s[i] == ',') {
				i = proto__ws(s, len, i + 1);
				continue;
			}
			if (i < len && s[i] == '}') {
				i++;
				break;
			}
			*msg = "not JSON (RFC 8259)";
			return HUB_ERR_INVAL;
		}
	if (proto__ws(s, len, i) != len) {
		*msg = "bytes after the object";
		return HUB_ERR_INVAL;
	}

	/* a well-formed object: now what it says */
	if (seen & (1u << M_ID)) {
		if (!parse_id(s, vs[M_ID], ve[M_ID], &f->id)) {
			*msg = "id must be an integer 0..4294967295";
			return HUB_ERR_INVAL;
		}
		f->has_id = 1;
	}
	i = vs[M_OP];
	if (!(seen & (1u << M_OP)) || s[i] != '"' ||
	    !proto__string(s, len, &i, op, sizeof(op), &n) || n >= sizeof(op)) {
		*msg = "missing op";
		return HUB_ERR_INVAL;
	}
	if (n == 4 && !memcmp(op, "ping", 4)) {
		f->op = PROTO_PING;
		goto ok;
	}
	if (n == 4 && !memcmp(op, "pong", 4)) {
		f->op = PROTO_PONG;
		goto ok;
	}
	if (n == 3 && !memcmp(op, "ack", 3)) {
		if (!f->has_id) {
			*msg = "ack needs an id";
			return HUB_ERR_INVAL;
		}
		f->op = PROTO_ACK;
		goto ok;
	}
	if (n != 3 || memcmp(op, "pub", 3)) {
		*msg = "unknown op";
		return HUB_ERR_INVAL;
	}
	f->op = PROTO_PUB;
	if (seen & (1u << M_QOS)) {
		if (ve[M_QOS] - vs[M_QOS] != 1 ||
		    (s[vs[M_QOS]] != '0' && s[vs[M_QOS]] != '1')) {
			*msg = "qos must be 0 or 1";
			return HUB_ERR_INVAL;
		}
		f->qos = s[vs[M_QOS]] - '0';
	}
	if (f->qos == 1 && !f->has_id) {
		*msg = "qos 1 needs an id";
		return HUB_ERR_INVAL;
	}
	i = vs[M_TOPIC];
	if (!(seen & (1u << M_TOPIC)) || s[i] != '"') {
		*msg = "missing topic";
		return HUB_ERR_INVAL;
	}
	proto__string(s, len, &i, f->topic, sizeof(f->topic), &f->topic_len);
	/* decoded, so "\u0000" is a NUL byte here and refused as a control */
	if (f->topic_len > PROTO_TOPIC_MAX ||
	    !proto_topic_device_ok(f->topic, f->topic_len)) {
		*code = PROTO_E_BAD_TOPIC;
		*msg = "topic must be 1..256 bytes of UTF-8, no control "
		       "character, empty level, +, #, leading $ or /, not "
		       "status or cmd/...";
		f->topic[0] = '\0';
		f->topic_len = 0;
		return HUB_ERR_INVAL;
	}
	f->topic[f->topic_len] = '\0';
	if (!(seen & (1u << M_PAYLOAD))) {
		*msg = "missing payload";
		return HUB_ERR_INVAL;
	}
	i = vs[M_PAYLOAD];
	if (s[i] != '"') {
		f->payload = buf + i;
		f->payload_len = ve[M_PAYLOAD] - i;
	} else if (!memchr(s + i + 1, '\\', ve[M_PAYLOAD] - i - 2)) {
		f->payload = buf + i + 1;
		f->payload_len = ve[M_PAYLOAD] - i - 2;
	} else {
		/* decoding only shortens: the span is enough room */
		f->own = malloc(ve[M_PAYLOAD] - i);
		if (!f->own) {
			rc = HUB_ERR_NOMEM;
			*msg = "out of memory";
			return rc;
		}
		proto__string(s, len, &i, f->own, ve[M_PAYLOAD] - i,
			      &f->payload_len);
		f->payload = f->own;
	}
ok:
	*code = NULL;
	*msg = NULL;
	return HUB_OK;
}

void
proto_frame_release(struct proto_frame *f)
{
	if (!f)
		return;
	free(f->own);
	f->own = NULL;
	f->payload = NULL;
	f->payload_len = 0;
}

int
proto_frame_parse_binary(const uint8_t *buf, size_t len, char *topic,
			 size_t topiclen, const uint8_t **payload,
			 size_t *payload_len, const char **code)
{
	size_t l;

	*code = PROTO_E_BAD_FRAME;
	if (!buf || len < 1 || buf[0] == 0 || (size_t)buf[0] + 1 > len)
		return HUB_ERR_INVAL;
	l = buf[0];
	if (l + 1 > topiclen)
		return HUB_ERR_TOOBIG;
	if (!proto_topic_device_ok((const char *)buf + 1, l)) {
		*code = PROTO_E_BAD_TOPIC;
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
proto_frame_ack(char *out, size_t cap, uint32_t id)
{
	return fit(
	    snprintf(out, cap, "{\"op\":\"ack\",\"id\":%" PRIu32 "}", id), cap);
}

size_t
proto_frame_pong(char *out, size_t cap)
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
proto_frame_err(char *out, size_t cap, int has_id, uint32_t id,
		const char *code, const char *msg)
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
proto_frame_msg_bound(const char *topic, size_t len)
{
	return 64 + 6 * strlen(topic) + 6 * len + 24;
}

size_t
proto_frame_msg(char *out, size_t cap, const char *topic, const void *payload,
		size_t len, enum proto_pl kind, int64_t id)
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
	if (kind == PROTO_PL_JSON) {
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
proto_frame_binary(uint8_t *out, size_t cap, const char *topic,
		   const void *payload, size_t len)
{
	size_t tl = strlen(topic);

	if (tl < 1 || tl > 255 || cap < 1 + tl + len)
		return 0;
	out[0] = (uint8_t)tl;
	memcpy(out + 1, topic, tl);
	memcpy(out + 1 + tl, payload, len);
	return 1 + tl + len;
}
