/*
 * proto_net.c - who the client is behind a trusted proxy, and which web
 * origins may connect (docs/protocol.md "Behind a proxy", "Browsers").
 * Pure (inet_pton only), any thread.
 *
 * Only a peer inside --trusted-proxies is believed about the client: its
 * X-Forwarded-For is read from the right, skipping entries that are
 * themselves trusted proxies, and the first other entry is the client (an
 * entry the client wrote itself sits further left and is never reached
 * past a non-proxy address). Anything that is not an IP address ends the
 * walk: the peer's own address is used then.
 */
#include "proto.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static int
parse_ip(const char *s, size_t len, struct proto_cidr *c)
{
	char buf[64];

	/* a NUL would end inet_pton's input early: never cut */
	if (len == 0 || len >= sizeof(buf) || memchr(s, '\0', len))
		return 0;
	memcpy(buf, s, len);
	buf[len] = '\0';
	if (inet_pton(AF_INET, buf, c->addr) == 1) {
		c->family = 4;
		return 1;
	}
	if (inet_pton(AF_INET6, buf, c->addr) == 1) {
		c->family = 6;
		return 1;
	}
	return 0;
}

int
proto_cidrs_parse(const char *list, struct proto_cidr *out, size_t max,
		  size_t *n)
{
	const char *p = list, *e, *slash;

	*n = 0;
	if (!list)
		return HUB_OK;
	while (*p) {
		struct proto_cidr c;
		size_t len;
		unsigned bits, maxbits;

		while (*p == ' ' || *p == ',')
			p++;
		if (!*p)
			break;
		e = p;
		while (*e && *e != ',' && *e != ' ')
			e++;
		len = (size_t)(e - p);
		slash = memchr(p, '/', len);
		memset(&c, 0, sizeof(c));
		if (!parse_ip(p, slash ? (size_t)(slash - p) : len, &c))
			return HUB_ERR_INVAL;
		maxbits = c.family == 4 ? 32 : 128;
		bits = maxbits;
		if (slash) {
			const char *d = slash + 1;

			if (d == e || e - d > 3)
				return HUB_ERR_INVAL;
			for (bits = 0; d < e; d++) {
				if (*d < '0' || *d > '9')
					return HUB_ERR_INVAL;
				bits = bits * 10 + (unsigned)(*d - '0');
			}
			if (bits > maxbits)
				return HUB_ERR_INVAL;
		}
		c.bits = bits;
		if (*n >= max)
			return HUB_ERR_TOOBIG;
		out[(*n)++] = c;
		p = e;
	}
	return HUB_OK;
}

static int
in_cidr(const struct proto_cidr *c, const struct proto_cidr *a)
{
	unsigned full = c->bits / 8, rest = c->bits % 8;

	if (c->family != a->family)
		return 0;
	if (memcmp(c->addr, a->addr, full))
		return 0;
	if (rest && ((c->addr[full] ^ a->addr[full]) & (0xff00 >> rest) & 0xff))
		return 0;
	return 1;
}

int
proto_cidrs_match(const struct proto_cidr *c, size_t n, const char *addr,
		  size_t len)
{
	struct proto_cidr a;
	size_t i;

	memset(&a, 0, sizeof(a));
	if (!addr || !parse_ip(addr, len, &a))
		return 0;
	for (i = 0; i < n; i++)
		if (in_cidr(&c[i], &a))
			return 1;
	return 0;
}

int
proto_forwarded_for(const char *xff, size_t len, const struct proto_cidr *c,
		    size_t n, char *out, size_t cap)
{
	size_t end = len;

	if (!xff || !cap)
		return HUB_ERR_NOTFOUND;
	while (end > 0) {
		size_t a = end, b;
		struct proto_cidr ip;

		while (a > 0 && xff[a - 1] != ',')
			a--;
		b = end;
		end = a ? a - 1 : 0;
		while (a < b && (xff[a] == ' ' || xff[a] == '\t'))
			a++;
		while (b > a && (xff[b - 1] == ' ' || xff[b - 1] == '\t'))
			b--;
		if (!parse_ip(xff + a, b - a, &ip))
			return HUB_ERR_NOTFOUND; /* not an address: stop */
		if (proto_cidrs_match(c, n, xff + a, b - a) && end > 0)
			continue; /* another proxy of ours: look further left */
		if (b - a >= cap)
			return HUB_ERR_TOOBIG;
		memcpy(out, xff + a, b - a);
		out[b - a] = '\0';
		return HUB_OK;
	}
	return HUB_ERR_NOTFOUND;
}

/* The node of one Forwarded element's for= parameter, as an address. */
static int
forwarded_node(const char *e, size_t len, const char **a, size_t *alen)
{
	size_t i = 0, s, t;

	while (i < len) {
		while (i < len && (e[i] == ' ' || e[i] == '\t' || e[i] == ';'))
			i++;
		s = i;
		while (i < len && e[i] != ';')
			i++;
		if (i - s > 4 && !strncasecmp(e + s, "for=", 4)) {
			s += 4;
			t = i;
			while (t > s && (e[t - 1] == ' ' || e[t - 1] == '\t'))
				t--;
			if (t - s >= 2 && e[s] == '"' && e[t - 1] == '"')
				s++, t--;
			if (s < t && e[s] == '[') { /* "[v6]:port" */
				const char *rb = memchr(e + s, ']', t - s);

				if (!rb)
					return 0;
				*a = e + s + 1;
				*alen = (size_t)(rb - (e + s + 1));
				return 1;
			}
			/* "v4:port" */
			{
				const char *colon = memchr(e + s, ':', t - s);

				if (colon &&
				    !memchr(colon + 1, ':',
					    t - (size_t)(colon + 1 - e)))
					t = (size_t)(colon - e);
			}
			*a = e + s;
			*alen = t - s;
			return 1;
		}
	}
	return 0;
}

int
proto_forwarded(const char *v, size_t len, const struct proto_cidr *c, size_t n,
		char *out, size_t cap)
{
	size_t end = len;

	if (!v || !cap)
		return HUB_ERR_NOTFOUND;
	while (end > 0) {
		size_t s = end;
		const char *a;
		size_t alen;
		struct proto_cidr ip;

		while (s > 0 && v[s - 1] != ',')
			s--;
		if (!forwarded_node(v + s, end - s, &a, &alen) ||
		    !parse_ip(a, alen, &ip))
			return HUB_ERR_NOTFOUND; /* unknown, obfuscated: stop */
		end = s ? s - 1 : 0;
		if (proto_cidrs_match(c, n, a, alen) && end > 0)
			continue;
		if (alen >= cap)
			return HUB_ERR_TOOBIG;
		memcpy(out, a, alen);
		out[alen] = '\0';
		return HUB_OK;
	}
	return HUB_ERR_NOTFOUND;
}

int
proto_origin_allowed(const char *list, const char *origin, size_t len)
{
	const char *p = list, *e;

	if (!list || !*list)
		return 1;
	while (*p) {
		size_t n;

		while (*p == ' ' || *p == ',')
			p++;
		if (!*p)
			break;
		e = p;
		while (*e && *e != ',' && *e != ' ')
			e++;
		n = (size_t)(e - p);
		if ((n == 1 && *p == '*') ||
		    (n == len && origin && !strncasecmp(p, origin, n)))
			return 1;
		p = e;
	}
	return 0;
}
