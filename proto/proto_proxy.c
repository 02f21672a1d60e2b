/*
 * proto_proxy.c - the PROXY protocol header a load balancer puts before
 * the client's bytes (HAProxy's proxy-protocol.txt, versions 1 and 2;
 * docs/protocol.md "Behind a proxy"). Pure, any thread.
 *
 * The parser is fed what has arrived so far and says whether it is a
 * complete header, a proper prefix of one (more is needed), not a PROXY
 * header at all, or malformed. A caller that reads only what the parser
 * called a prefix, and then exactly header_len bytes, never reads past the
 * header into the TLS or HTTP bytes that follow.
 *
 * Strict: version 1 is "PROXY TCP4|TCP6 src dst sport dport\r\n" with
 * single spaces, addresses inet_pton accepts for that family, decimal ports
 * 0..65535 without leading zeros, at most 107 bytes; "PROXY UNKNOWN" takes
 * anything up to the CRLF. Version 2 is the 12-byte signature, version 2,
 * command LOCAL (its address block is discarded, as the spec says) or
 * PROXY with family UNSPEC/INET/INET6/UNIX over UNSPEC or STREAM (a
 * datagram address on a stream is refused) and a length that holds the
 * family's address block; TLVs after it are skipped unread. AF_UNIX,
 * UNSPEC, UNKNOWN and LOCAL carry no address for us: family 0, the peer's
 * own address stands. header_len of a version 2 header may exceed what
 * has arrived (TLVs): the caller consumes the rest unread.
 */
#include "proto.h"

#include <arpa/inet.h>
#include <string.h>

static const unsigned char v2_sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
					 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
static const char v1_sig[6] = "PROXY ";

/* A decimal port 0..65535, no sign, no leading zero. */
static int
parse_port(const char *s, size_t len, uint16_t *out)
{
	unsigned v = 0;
	size_t i;

	if (len == 0 || len > 5 || (len > 1 && s[0] == '0'))
		return 0;
	for (i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return 0;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > 65535)
		return 0;
	*out = (uint16_t)v;
	return 1;
}

static int
parse_addr(int family, const char *s, size_t len, unsigned char *out)
{
	char buf[48];

	if (len == 0 || len >= sizeof(buf) || memchr(s, '\0', len))
		return 0;
	memcpy(buf, s, len);
	buf[len] = '\0';
	return inet_pton(family == 4 ? AF_INET : AF_INET6, buf, out) == 1;
}

/* The next space-separated field of line[*pos..end): exactly one space
 * follows it unless it is the last one. */
static int
field(const char *line, size_t end, size_t *pos, int last, const char **f,
      size_t *flen)
{
	size_t s = *pos, i = s;

	while (i < end && line[i] != ' ')
		i++;
	if (i == s || (last ? i != end : i == end))
		return 0;
	*f = line + s;
	*flen = i - s;
	*pos = last ? i : i + 1;
	return 1;
}

static int
parse_v1(const char *b, size_t len, struct proto_proxy *out)
{
	const char *crlf = NULL, *f;
	size_t i, end, pos, flen;
	int fam;

	for (i = 0; i < len && i < PROTO_PROXY_V1_MAX; i++) {
		if (b[i] == '\n')
			return HUB_ERR_INVAL; /* a bare LF */
		if (b[i] == '\r') {
			if (i + 1 >= PROTO_PROXY_V1_MAX)
				return HUB_ERR_INVAL; /* the LF would be 108th
						       */
			if (i + 1 >= len)
				break;
			if (b[i + 1] != '\n')
				return HUB_ERR_INVAL;
			crlf = b + i;
			break;
		}
	}
	if (!crlf) {
		/* the CRLF must come within 107 bytes */
		return len >= PROTO_PROXY_V1_MAX ? HUB_ERR_INVAL : HUB_ERR_BUSY;
	}
	end = (size_t)(crlf - b);
	out->version = 1;
	out->command = PROTO_PROXY_PROXY;
	out->header_len = end + 2;
	pos = sizeof(v1_sig);
	if (end - pos >= 7 && !memcmp(b + pos, "UNKNOWN", 7) &&
	    (end - pos == 7 || b[pos + 7] == ' ')) {
		out->family = 0; /* the rest of the line is ignored */
		return HUB_OK;
	}
	if (end - pos < 5 || memcmp(b + pos, "TCP", 3) ||
	    (b[pos + 3] != '4' && b[pos + 3] != '6') || b[pos + 4] != ' ')
		return HUB_ERR_INVAL;
	fam = b[pos + 3] == '4' ? 4 : 6;
	pos += 5;
	if (!field(b, end, &pos, 0, &f, &flen) ||
	    !parse_addr(fam, f, flen, out->src) ||
	    !field(b, end, &pos, 0, &f, &flen) ||
	    !parse_addr(fam, f, flen, out->dst) ||
	    !field(b, end, &pos, 0, &f, &flen) ||
	    !parse_port(f, flen, &out->src_port) ||
	    !field(b, end, &pos, 1, &f, &flen) ||
	    !parse_port(f, flen, &out->dst_port))
		return HUB_ERR_INVAL;
	out->family = fam;
	return HUB_OK;
}

static int
parse_v2(const unsigned char *b, size_t len, struct proto_proxy *out)
{
	size_t total, need;
	unsigned fam, proto;

	if (len < 16)
		return HUB_ERR_BUSY;
	if ((b[12] >> 4) != 2 || (b[12] & 0x0f) > 1)
		return HUB_ERR_INVAL;
	total = 16 + (((size_t)b[14] << 8) | b[15]);
	out->version = 2;
	out->header_len = total;
	out->family = 0;
	if ((b[12] & 0x0f) == 0) {
		/* LOCAL: the proxy speaks for itself (a health check); the
		 * address block "including the family" is discarded */
		out->command = PROTO_PROXY_LOCAL;
		return HUB_OK;
	}
	out->command = PROTO_PROXY_PROXY;
	fam = b[13] >> 4;
	proto = b[13] & 0x0f;
	/* UNSPEC pairs only with UNSPEC; a datagram is not our stream */
	if (fam > 3 || proto > 2 || (fam == 0) != (proto == 0) || proto == 2)
		return HUB_ERR_INVAL;
	need = fam == 1 ? 12 : fam == 2 ? 36 : fam == 3 ? 216 : 0;
	if (total - 16 < need)
		return HUB_ERR_INVAL;
	if (fam != 1 && fam != 2)
		return HUB_OK; /* UNSPEC, AF_UNIX: no address for us */
	if (len < 16 + need)
		return HUB_ERR_BUSY;
	if (fam == 1) {
		memcpy(out->src, b + 16, 4);
		memcpy(out->dst, b + 20, 4);
		out->src_port = (uint16_t)((b[24] << 8) | b[25]);
		out->dst_port = (uint16_t)((b[26] << 8) | b[27]);
		out->family = 4;
	} else {
		memcpy(out->src, b + 16, 16);
		memcpy(out->dst, b + 32, 16);
		out->src_port = (uint16_t)((b[48] << 8) | b[49]);
		out->dst_port = (uint16_t)((b[50] << 8) | b[51]);
		out->family = 6;
	}
	return HUB_OK;
}

int
proto_proxy_parse(const void *buf, size_t len, struct proto_proxy *out)
{
	const unsigned char *b = buf;
	size_t n;

	memset(out, 0, sizeof(*out));
	if (len == 0)
		return HUB_ERR_BUSY;
	if (b[0] == v2_sig[0]) {
		n = len < sizeof(v2_sig) ? len : sizeof(v2_sig);
		if (memcmp(b, v2_sig, n))
			return HUB_ERR_NOTFOUND;
		return parse_v2(b, len, out);
	}
	if (b[0] == (unsigned char)v1_sig[0]) {
		n = len < sizeof(v1_sig) ? len : sizeof(v1_sig);
		if (memcmp(b, v1_sig, n))
			return HUB_ERR_NOTFOUND; /* "PUT", "POST": HTTP */
		if (len < sizeof(v1_sig))
			return HUB_ERR_BUSY;
		return parse_v1((const char *)b, len, out);
	}
	return HUB_ERR_NOTFOUND;
}

int
proto_proxy_addr(const struct proto_proxy *p, char *out, size_t cap)
{
	if (!cap)
		return HUB_ERR_TOOBIG;
	out[0] = '\0';
	if (p->family != 4 && p->family != 6)
		return HUB_ERR_NOTFOUND;
	if (!inet_ntop(p->family == 4 ? AF_INET : AF_INET6, p->src, out,
		       (socklen_t)cap)) {
		out[0] = '\0';
		return HUB_ERR_TOOBIG;
	}
	return HUB_OK;
}
