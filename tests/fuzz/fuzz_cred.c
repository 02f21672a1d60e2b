/*
 * fuzz_cred.c - libFuzzer target: the credential and upgrade-request
 * parsers (proto_cred.c, proto_http.c) and the proxy and origin rules
 * (proto_net.c). Byte 0 picks the parser; the rest
 * is the input. Checks that whatever is accepted as an id or a token holds
 * no control byte (so nothing is ever cut short) and lies inside the input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
inside(const char *p, size_t n, const char *buf, size_t size)
{
	size_t i;

	if (p < buf || p + n > buf + size || !n)
		abort();
	for (i = 0; i < n; i++)
		if ((unsigned char)p[i] < 0x21 || (unsigned char)p[i] > 0x7e)
			abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data + 1, *t, *why;
	size_t len, n;
	struct proto_upgrade u;
	int v1;

	if (size < 1)
		return 0;
	len = size - 1;
	switch (data[0] % 7) {
	case 0:
		if (proto_device_path(buf, len, &t, &n) == HUB_OK) {
			inside(t, n, buf, len);
			if (!proto_id_valid(t, n))
				abort();
		}
		break;
	case 1:
		if (proto_cred_bearer(buf, len, &t, &n) == HUB_OK)
			inside(t, n, buf, len);
		break;
	case 2:
		if (proto_cred_urlarg(buf, len, "token", &t, &n) == HUB_OK)
			inside(t, n, buf, len);
		break;
	case 3:
		if (proto_subprotocols(buf, len, &v1, &t, &n) == HUB_OK && t)
			inside(t, n, buf, len);
		break;
	case 4:
		/* split into version | key | wsversion at the first two 0xff */
		memset(&u, 0, sizeof(u));
		u.version = buf;
		t = memchr(buf, 0xff, len);
		u.version_len = t ? (size_t)(t - buf) : len;
		u.host_len = len & 1;
		if (t) {
			const char *k = t + 1, *e;

			e = memchr(k, 0xff, len - (size_t)(k - buf));
			u.key = k;
			u.key_len =
			    e ? (size_t)(e - k) : len - (size_t)(k - buf);
			if (e) {
				u.wsversion = e + 1;
				u.wsversion_len = len - (size_t)(e + 1 - buf);
			}
		}
		if (proto_upgrade_status(&u, &why) == 0 &&
		    (u.key_len != 24 || u.version_len != 8))
			abort();
		break;
	case 5: {
		/* X-Forwarded-For behind 10.0.0.0/8: the client is an address
		 */
		struct proto_cidr c[2];
		char out[64];

		if (proto_cidrs_parse("10.0.0.0/8,fd00::/8", c, 2, &n))
			abort();
		if (proto_forwarded_for(buf, len, c, n, out, sizeof(out)) ==
		    HUB_OK) {
			if (!memmem(buf, len, out, strlen(out)) ||
			    strlen(out) == 0)
				abort();
			if (!proto_cidrs_match(c, n, out, strlen(out)) &&
			    !memchr(out, '.', strlen(out)) &&
			    !memchr(out, ':', strlen(out)))
				abort();
		}
		if (proto_forwarded(buf, len, c, n, out, sizeof(out)) ==
			HUB_OK &&
		    (!strlen(out) || !memmem(buf, len, out, strlen(out))))
			abort();
		break;
	}
	case 6: {
		/* a CIDR list from the configuration, then a match */
		struct proto_cidr c[8];
		char list[256];

		if (len >= sizeof(list))
			break;
		memcpy(list, buf, len);
		list[len] = '\0';
		if (proto_cidrs_parse(list, c, 8, &n) == HUB_OK) {
			for (size_t i = 0; i < n; i++)
				if (c[i].bits > (c[i].family == 4 ? 32u : 128u))
					abort();
			proto_cidrs_match(c, n, "10.1.2.3", 8);
			proto_cidrs_match(c, n, "::1", 3);
		}
		proto_origin_allowed(list, "https://a.example", 17);
		break;
	}
	}
	return 0;
}
