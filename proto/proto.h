/*
 * proto.h - the device protocol's pure rules (docs/protocol.md), shared by
 * hubd, the MQTT bridge and hubctl the way Mosquitto shares
 * lib/util_topic.c:
 *
 *   - device ids and device-relative topics, the first levels the hub
 *     reserves for itself, and the namespaces a --prefix may not overlap;
 *   - the mapping between device topics and MQTT topics;
 *   - UTF-8 and strict RFC 8259 JSON (proto_json.c);
 *   - the v1 frame envelope in and out, and the binary frame
 *     (proto_frame.c);
 *   - credentials as they arrive in an HTTP upgrade (proto_cred.c), and
 *     the upgrade request itself (proto_http.c);
 *   - the client's address behind a trusted proxy, allowed web origins
 *     (proto_net.c), the PROXY protocol header (proto_proxy.c).
 *
 * Everything here is a pure function of its arguments: no I/O, no state,
 * no logging, safe from any thread. Every input is (pointer, length) and
 * may contain any byte, including NUL: nothing is ever cut at a NUL.
 * Unit-tested in tests/unit/test_proto.c and fuzzed (tests/fuzz/).
 */
#ifndef PROTO_H
#define PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "hub_err.h"
#include "hub_util.h"

#define PROTO_TOPIC_MAX 256	 /* device-relative topic, bytes */
#define PROTO_FRAME_MAX_DEPTH 32 /* JSON nesting of a text frame */
#define PROTO_JSON_MAX_DEPTH 64	 /* nesting of a downlink JSON payload */
#define PROTO_TOKEN_MAX 1024	 /* credential bytes */
#define PROTO_HUB_NS "hub"	 /* the hub's own first topic level */
#define PROTO_SESSIONS_PREFIX "hub/sessions/"

/* ---- ids and topics (proto_topic.c) ----------------------------------- */

/* 1 if s[0..len) is a device id: [A-Za-z0-9_-]{1,64}. */
int proto_id_valid(const char *s, size_t len);
/*
 * 1 if t[0..len) is an acceptable device-relative topic: 1..256 bytes,
 * valid UTF-8, no control characters (C0 including NUL, DEL, C1), no '+'
 * or '#', no leading '$' or '/', no empty level.
 */
int proto_topic_valid(const char *t, size_t len);
/* 1 if t's first level is one the hub publishes itself: status, cmd. */
int proto_topic_reserved(const char *t, size_t len);
/* What a device may publish to: valid and not reserved. */
int proto_topic_device_ok(const char *t, size_t len);
/*
 * 1 if prefix (NUL-terminated) is a usable --prefix: a valid topic whose
 * first level is none of the hub's own namespaces (hub, groups, fleet) and
 * not "$...". Otherwise a device whose id is a control word ("sessions")
 * would publish into hub/sessions/... and the like.
 */
int proto_prefix_valid(const char *prefix);
/* "<prefix>/<device>/<rel>" into out; HUB_ERR_TOOBIG if it does not fit. */
int proto_topic_up(const char *prefix, const char *device, const char *rel,
		   char *out, size_t outlen);
/*
 * Splits an incoming "<prefix>/<device>/cmd/..." into device and the
 * relative topic ("cmd/..."); or "hub/sessions/<device>" into device with
 * *is_session = 1 and *rel = "". HUB_ERR_INVAL for anything else,
 * HUB_ERR_TOOBIG if the device id does not fit in devlen.
 */
int proto_topic_down(const char *prefix, const char *topic, char *device,
		     size_t devlen, const char **rel, int *is_session);

/* ---- UTF-8, JSON, payload mapping (proto_json.c) ---------------------- */

/* 1 if s[0..len) is valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF).
 */
int proto_utf8_valid(const void *s, size_t len);
/*
 * 1 if s[0..len) is exactly one JSON value per RFC 8259 (surrounding
 * whitespace allowed), nested at most PROTO_JSON_MAX_DEPTH. Strict where
 * common parsers are lax: no leading zeros or bare '.', no raw control
 * characters in strings, no lone surrogate escapes. s must be valid UTF-8
 * (proto_payload_kind checks it first).
 */
int proto_json_valid(const void *s, size_t len);
/*
 * Downlink mapping, the mirror of the uplink: PROTO_PL_JSON if the bytes
 * are one valid JSON value (sent as that value), PROTO_PL_TEXT for other
 * valid UTF-8 (sent as a JSON string), PROTO_PL_BINARY for anything else
 * (sent as a binary frame).
 */
enum proto_pl { PROTO_PL_JSON, PROTO_PL_TEXT, PROTO_PL_BINARY };
enum proto_pl proto_payload_kind(const void *p, size_t len);

/* ---- frames (proto_frame.c) ------------------------------------------- */

enum proto_op { PROTO_PUB, PROTO_ACK, PROTO_PING, PROTO_PONG };

/* Error codes of the protocol's err frame. */
#define PROTO_E_BAD_FRAME "bad_frame"
#define PROTO_E_BAD_TOPIC "bad_topic"
#define PROTO_E_TOO_LARGE "too_large"
#define PROTO_E_RATE_LIMITED "rate_limited"
#define PROTO_E_INFLIGHT_FULL "inflight_full"
#define PROTO_E_BROKER_UNAVAILABLE "broker_unavailable"

struct proto_frame {
	enum proto_op op;
	int qos;
	int has_id;
	uint32_t id;
	char topic[PROTO_TOPIC_MAX + 1]; /* pub: validated, NUL-terminated */
	size_t topic_len;
	/* pub: the MQTT payload bytes. Points into the parsed buffer (valid
	 * while it is), or into own when a JSON string had escapes. */
	const char *payload;
	size_t payload_len;
	char *own; /* freed by proto_frame_release */
};

/*
 * Parses one text frame: buf[0..len), valid UTF-8 (the caller checks it: a
 * text frame that is not is closed with 1007), not NUL-terminated. The
 * whole text must be one strict RFC 8259 JSON object (see
 * proto_json_valid), nested at most PROTO_FRAME_MAX_DEPTH, with op, topic,
 * qos, id and payload at most once each.
 *
 * On success HUB_OK and *f filled: release with proto_frame_release. On a
 * bad frame a HUB_ERR_* code, *code one of PROTO_E_*, *msg a short static
 * explanation, f->id / f->has_id set when the frame carried a usable id
 * (so the err can name it); nothing to release.
 *
 * Uplink payload rule: a JSON string is published as its UTF-8 bytes
 * exactly (\u0000 included), any other value as its JSON text exactly as
 * the device sent it.
 */
int proto_frame_parse_text(const char *buf, size_t len, struct proto_frame *f,
			   const char **code, const char **msg);
void proto_frame_release(struct proto_frame *f);
/*
 * Parses a binary frame: byte 0 = topic length L (1..255), L bytes of
 * topic, then the payload (QoS 0). topic gets the NUL-terminated topic
 * (topiclen >= 256); *payload points into buf. Nothing allocated.
 */
int proto_frame_parse_binary(const uint8_t *buf, size_t len, char *topic,
			     size_t topiclen, const uint8_t **payload,
			     size_t *payload_len, const char **code);

/* Builders: write into out (cap bytes); return the length, or 0 if it did
 * not fit. */
size_t proto_frame_ack(char *out, size_t cap, uint32_t id);
size_t proto_frame_err(char *out, size_t cap, int has_id, uint32_t id,
		       const char *code, const char *msg);
size_t proto_frame_pong(char *out, size_t cap);
/*
 * A downlink msg frame: the payload as a JSON value (PROTO_PL_JSON,
 * inserted verbatim) or as a JSON string (PROTO_PL_TEXT). id < 0: none.
 */
size_t proto_frame_msg(char *out, size_t cap, const char *topic,
		       const void *payload, size_t len, enum proto_pl kind,
		       int64_t id);
/* Worst-case size of proto_frame_msg's output for a payload of len bytes. */
size_t proto_frame_msg_bound(const char *topic, size_t len);
/* Binary downlink: [L][topic][payload]; 0 if topic is longer than 255. */
size_t proto_frame_binary(uint8_t *out, size_t cap, const char *topic,
			  const void *payload, size_t len);

/* ---- credentials in the upgrade request (proto_cred.c) ---------------- */

/*
 * The device id of a request path "/v1/devices/{id}" (path[0..len), as
 * the HTTP parser decoded it, so "%00" or "%0d" are bytes here). HUB_OK
 * and *id / *idlen pointing into path; HUB_ERR_NOTFOUND when the path is
 * not under /v1/devices/; HUB_ERR_INVAL when the id is not a valid id
 * over its whole length.
 */
int proto_device_path(const char *path, size_t len, const char **id,
		      size_t *idlen);
/*
 * 1 if tok[0..len) may be a credential: 1..PROTO_TOKEN_MAX visible ASCII
 * bytes (0x21..0x7e). NUL, CR, LF, space or any control byte refuse it:
 * a token is never cut short to something that still matches.
 */
int proto_token_ok(const char *tok, size_t len);
/*
 * The token of an Authorization header value v[0..len): scheme "Bearer"
 * (any case), one or more spaces, the token, optional trailing whitespace
 * (RFC 9110 5.5, ignored). HUB_OK and *tok / *toklen into v;
 * HUB_ERR_NOTFOUND for another scheme; HUB_ERR_INVAL for a malformed or
 * unusable token (proto_token_ok).
 */
int proto_cred_bearer(const char *v, size_t len, const char **tok,
		      size_t *toklen);
/*
 * One decoded query argument a[0..len) ("token=..."): if its name is name
 * (NUL-terminated, without '='), HUB_OK and the value; HUB_ERR_NOTFOUND
 * for another name; HUB_ERR_INVAL when the value is not proto_token_ok.
 */
int proto_cred_urlarg(const char *a, size_t len, const char *name,
		      const char **val, size_t *vlen);
/*
 * The Sec-WebSocket-Protocol offer v[0..len) (comma list): *has_v1 = 1 if
 * "hub.v1" is offered; a "bearer.<token>" entry gives *tok / *toklen (else
 * *tok = NULL). HUB_OK, or HUB_ERR_INVAL for a malformed list, two bearer
 * entries, or an unusable token.
 */
int proto_subprotocols(const char *v, size_t len, int *has_v1, const char **tok,
		       size_t *toklen);

/* ---- the upgrade request itself (proto_http.c) ------------------------ */

/* What the HTTP parser found; pointers need not be NUL-terminated. */
struct proto_upgrade {
	const char *version; /* request line's version, "HTTP/1.1" */
	size_t version_len;
	size_t host_len; /* 0: no Host header */
	const char *key; /* Sec-WebSocket-Key */
	size_t key_len;
	const char *wsversion; /* Sec-WebSocket-Version */
	size_t wsversion_len;
	const char *content_length;   /* repeated ones joined by ',' */
	size_t content_length_len;    /* 0: none */
	size_t transfer_encoding_len; /* 0: none */
};
/*
 * Body framing of a request to the device port, where no request has a
 * body (RFC 9112 6.1/6.3, request smuggling behind a proxy that reuses
 * connections): 0 if there is no Transfer-Encoding and Content-Length is
 * absent or exactly "0", else 400 (the connection must then be closed).
 */
int proto_body_status(const char *cl, size_t cl_len, size_t te_len);
/* 1 if k[0..len) is 16 bytes in base64 (RFC 6455 4.1). */
int proto_ws_key_valid(const char *k, size_t len);
/*
 * 0 if the request may be upgraded, else the HTTP status to refuse it
 * with and *why a short static body: 400 for any body framing
 * (proto_body_status), a version other than HTTP/1.1 (also a request
 * line cut short), no Host or a malformed key;
 * 426 for a missing or unsupported Sec-WebSocket-Version (the answer must
 * carry "Sec-WebSocket-Version: 13").
 */
int proto_upgrade_status(const struct proto_upgrade *u, const char **why);
/*
 * RFC 6455 5.5.1/7.4: the payload p[0..len) of a close frame a peer sent.
 * 0 if it is well-formed (empty, or a valid status code and a UTF-8
 * reason), else the close code to fail the connection with: 1002 for a
 * 1-byte payload or a code that may not be sent (0-999, 1004-1006, 1015,
 * unassigned 1016-2999, >= 5000), 1007 for a reason that is not UTF-8.
 */
int proto_ws_close_status(const unsigned char *p, size_t len);

/* ---- behind a proxy, browsers (proto_net.c) --------------------------- */

/* An IPv4 or IPv6 network: family 4 or 6, addr in network order. */
struct proto_cidr {
	int family;
	unsigned bits;
	unsigned char addr[16];
};
/*
 * Parses a comma list "10.0.0.0/8, 192.168.1.7, fd00::/8" (a bare address
 * is a /32 or /128) into out[0..max). HUB_OK and *n; HUB_ERR_INVAL for a
 * malformed entry; HUB_ERR_TOOBIG past max entries.
 */
int proto_cidrs_parse(const char *list, struct proto_cidr *out, size_t max,
		      size_t *n);
/* 1 if the address text addr[0..len) lies in one of c[0..n). */
int proto_cidrs_match(const struct proto_cidr *c, size_t n, const char *addr,
		      size_t len);
/*
 * The client address of an X-Forwarded-For value xff[0..len) sent by a
 * trusted proxy: walking from the right, entries inside c[0..n) (more
 * trusted proxies) are skipped; the first other entry is the client,
 * copied NUL-terminated into out. HUB_ERR_NOTFOUND when an entry is not an
 * IP address (the walk stops there: use the peer's address).
 */
int proto_forwarded_for(const char *xff, size_t len, const struct proto_cidr *c,
			size_t n, char *out, size_t cap);
/*
 * The same for a Forwarded value (RFC 7239): the for= node of each
 * element, "[v6]:port" and "v4:port" reduced to the address; "unknown" or
 * an obfuscated node ends the walk (HUB_ERR_NOTFOUND).
 */
int proto_forwarded(const char *v, size_t len, const struct proto_cidr *c,
		    size_t n, char *out, size_t cap);
/*
 * 1 if origin[0..len) is in list ("https://a.example, https://b.example";
 * NULL, empty or "*": any), compared without regard to case.
 */
int proto_origin_allowed(const char *list, const char *origin, size_t len);

/* ---- the PROXY protocol header (proto_proxy.c) ------------------------ */

#define PROTO_PROXY_V1_MAX 107 /* a version 1 line, CRLF included */
/* Enough bytes to decide any header: a v1 line, or v2's 16 bytes and the
 * largest address block the parser reads (AF_INET6, 36). */
#define PROTO_PROXY_PEEK_MAX PROTO_PROXY_V1_MAX

enum proto_proxy_cmd { PROTO_PROXY_LOCAL, PROTO_PROXY_PROXY };

struct proto_proxy {
	int version;		      /* 1 or 2 */
	enum proto_proxy_cmd command; /* LOCAL: the proxy's own connection */
	int family; /* 4 or 6; 0: no client address (UNKNOWN, UNSPEC, AF_UNIX,
		       LOCAL): the peer's own address stands */
	unsigned char src[16], dst[16]; /* network order, 4 or 16 bytes used */
	uint16_t src_port, dst_port;
	size_t header_len; /* its bytes on the wire, v2 TLVs included */
};
/*
 * A PROXY protocol v1 or v2 header at the start of buf[0..len), the bytes
 * a connection has sent so far. HUB_OK: *out holds it (out->header_len may
 * exceed len for a v2 header with TLVs: the caller skips the rest).
 * HUB_ERR_BUSY: buf is a proper prefix of a header, all of it header
 * bytes; wait for more. HUB_ERR_NOTFOUND: buf does not begin like a
 * header (TLS, HTTP). HUB_ERR_INVAL: a malformed header, or a v1 line
 * with no CRLF within 107 bytes. Any thread.
 */
int proto_proxy_parse(const void *buf, size_t len, struct proto_proxy *out);
/* The client address of a parsed header as text into out[0..cap):
 * HUB_OK, HUB_ERR_NOTFOUND (family 0: none) or HUB_ERR_TOOBIG. */
int proto_proxy_addr(const struct proto_proxy *p, char *out, size_t cap);

#endif
