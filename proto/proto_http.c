/*
 * proto_http.c - what an upgrade request must carry before the hub looks at
 * its credentials (RFC 6455 4.1/4.2.1, RFC 9112 3). Pure, any thread.
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
proto_upgrade_status(const struct proto_upgrade *u, const char **why)
{
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
