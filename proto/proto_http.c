/*
 * proto_http.c - what an upgrade request must carry before the hub looks at
 * its credentials (RFC 6455 4.1/4.2.1, RFC 9112 3), and what a close
 * frame from a peer may hold (RFC 6455 5.5.1, 7.4). Pure, any thread.
 *
 * The HTTP parser in front of the hub is lenient: it takes an HTTP/1.0
 * upgrade, a request without Host, any Sec-WebSocket-Key, and it ends the
 * request line at a CR or LF that came percent-encoded ("?token=X%0D%0A"),
 * leaving the request without an HTTP version. Requiring "HTTP/1.1"
 * exactly refuses both the old protocol and the cut request line.
 */
#include "proto.h"

#include <string.h>

static int
b64(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int
proto_ws_key_valid(const char *k, size_t len)
{
	size_t i;
	int last;

	/* 16 bytes in base64: 22 symbols and "==" */
	if (!k || len != 24 || k[22] != '=' || k[23] != '=')
		return 0;
	for (i = 0; i < 22; i++)
		if (b64((unsigned char)k[i]) < 0)
			return 0;
	/* the 22nd symbol carries 2 bits; the rest must be zero */
	last = b64((unsigned char)k[21]);
	return (last & 0x0f) == 0;
}

int
proto_ws_close_status(const unsigned char *p, size_t len)
{
	unsigned code;

	if (!len)
		return 0;
	if (len == 1 || !p)
		return 1002;
	code = (unsigned)p[0] << 8 | p[1];
	/* 1000-1003, 1007-1011, and the IANA-registered 1012-1014 */
	if (!((code >= 1000 && code <= 1003) ||
	      (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999)))
		return 1002;
	return proto_utf8_valid(p + 2, len - 2) ? 0 : 1007;
}

int
proto_body_status(const char *cl, size_t cl_len, size_t te_len)
{
	if (te_len)
		return 400;
	if (cl_len && (cl_len != 1 || !cl || cl[0] != '0'))
		return 400;
	return 0;
}

int
proto_upgrade_status(const struct proto_upgrade *u, const char **why)
{
	if (proto_body_status(u->content_length, u->content_length_len,
			      u->transfer_encoding_len)) {
		*why = "no request body here (Content-Length, "
		       "Transfer-Encoding)\n";
		return 400;
	}
	if (u->version_len != 8 || memcmp(u->version, "HTTP/1.1", 8)) {
		*why = "an upgrade needs HTTP/1.1\n";
		return 400;
	}
	if (!u->host_len) {
		*why = "Host required\n";
		return 400;
	}
	if (!u->wsversion_len) {
		*why = "Sec-WebSocket-Version required\n";
		return 426;
	}
	if (u->wsversion_len != 2 || memcmp(u->wsversion, "13", 2)) {
		*why = "only Sec-WebSocket-Version 13\n";
		return 426;
	}
	if (!proto_ws_key_valid(u->key, u->key_len)) {
		*why = "Sec-WebSocket-Key must be 16 bytes in base64\n";
		return 400;
	}
	*why = NULL;
	return 0;
}
