/*
 * proto_json.c - UTF-8 validation, a strict RFC 8259 JSON scanner, and the
 * downlink payload mapping (docs/protocol.md "Payloads"). Pure, any thread.
 *
 * General JSON parsers are lenient where the protocol must not be (cJSON
 * takes "01", "1." and raw control characters inside strings, and keeps
 * a lone surrogate escape as invalid UTF-8), and they stop at a NUL. The
 * hub only ever needs to know whether bytes are JSON and where a value
 * ends, and to decode a few strings, so it scans by the grammar itself: no
 * tree is built, no allocation is made, nesting is bounded, every index is
 * checked against the length.
 */
#include "proto_int.h"

#include <string.h>

int
proto_utf8_valid(const void *p, size_t len)
{
	const unsigned char *s = p;
	size_t i = 0;

	if (!p && len)
		return 0;
	while (i < len) {
		unsigned c = s[i];
		size_t n;
		unsigned cp, min;

		/* ASCII runs, eight bytes at a time */
		while (len - i >= 8) {
			uint64_t v;

			memcpy(&v, s + i, 8);
			if (v & 0x8080808080808080ull)
				break;
			i += 8;
		}
		if (i == len)
			break;
		c = s[i];
		if (c < 0x80) {
			i++;
			continue;
		} else if (c >= 0xc2 && c <= 0xdf) {
			n = 1, cp = c & 0x1f, min = 0x80;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2, cp = c & 0x0f, min = 0x800;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3, cp = c & 0x07, min = 0x10000;
		} else {
			return 0; /* continuation byte, C0/C1 overlong, > F4 */
		}
		if (len - i - 1 < n)
			return 0;
		for (size_t k = 1; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return 0;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		i += n + 1;
	}
	return 1;
}

size_t
proto__ws(const unsigned char *s, size_t len, size_t i)
{
	while (i < len &&
	       (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
		i++;
	return i;
}

static int
is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static int
hex4(const unsigned char *s, size_t len, size_t i, unsigned *v)
{
	unsigned x = 0;
	size_t k;

	if (i > len || len - i < 4)
		return 0;
	for (k = 0; k < 4; k++) {
		unsigned char c = s[i + k];

		x <<= 4;
		if (c >= '0' && c <= '9')
			x |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			x |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			x |= (unsigned)(c - 'A' + 10);
		else
			return 0;
	}
	*v = x;
	return 1;
}

static void
emit(char *out, size_t cap, size_t *o, const unsigned char *b, size_t n)
{
	size_t k;

	for (k = 0; k < n; k++, (*o)++)
		if (out && *o < cap)
			out[*o] = (char)b[k];
}

static size_t
utf8_encode(unsigned cp, unsigned char *b)
{
	if (cp < 0x80) {
		b[0] = (unsigned char)cp;
		return 1;
	}
	if (cp < 0x800) {
		b[0] = (unsigned char)(0xc0 | (cp >> 6));
		b[1] = (unsigned char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		b[0] = (unsigned char)(0xe0 | (cp >> 12));
		b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		b[2] = (unsigned char)(0x80 | (cp & 0x3f));
		return 3;
	}
	b[0] = (unsigned char)(0xf0 | (cp >> 18));
	b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
	b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
	b[3] = (unsigned char)(0x80 | (cp & 0x3f));
	return 4;
}

int
proto__string(const unsigned char *s, size_t len, size_t *i, char *out,
	      size_t cap, size_t *outlen)
{
	size_t k = *i + 1, o = 0;

	if (*i >= len || s[*i] != '"')
		return 0;
	while (k < len) {
		unsigned char c = s[k], b[4];
		unsigned cp, lo;
		size_t run = k;

		if (c == '"') {
			*i = k + 1;
			*outlen = o;
			return 1;
		}
		if (c < 0x20)
			return 0; /* RFC 8259: control characters are escaped */
		if (c != '\\') {
			/* copy the plain run at once */
			while (run < len && s[run] != '"' && s[run] != '\\' &&
			       s[run] >= 0x20)
				run++;
			emit(out, cap, &o, s + k, run - k);
			k = run;
			continue;
		}
		if (++k >= len)
			return 0;
		switch (s[k]) {
		case '"':
		case '\\':
		case '/':
			b[0] = s[k];
			break;
		case 'b':
			b[0] = '\b';
			break;
		case 'f':
			b[0] = '\f';
			break;
		case 'n':
			b[0] = '\n';
			break;
		case 'r':
			b[0] = '\r';
			break;
		case 't':
			b[0] = '\t';
			break;
		case 'u':
			if (!hex4(s, len, k + 1, &cp))
				return 0;
			k += 4;
			if (cp >= 0xdc00 && cp <= 0xdfff)
				return 0; /* a low surrogate alone */
			if (cp >= 0xd800 && cp <= 0xdbff) {
				/* must be followed by \u<low surrogate> */
				if (len - k < 7 || s[k + 1] != '\\' ||
				    s[k + 2] != 'u' ||
				    !hex4(s, len, k + 3, &lo) || lo < 0xdc00 ||
				    lo > 0xdfff)
					return 0;
				k += 6;
				cp = 0x10000 + ((cp - 0xd800) << 10) +
				     (lo - 0xdc00);
			}
			emit(out, cap, &o, b, utf8_encode(cp, b));
			k++;
			continue;
		default:
			return 0;
		}
		emit(out, cap, &o, b, 1);
		k++;
	}
	return 0;
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int
number(const unsigned char *s, size_t len, size_t *i)
{
	size_t k = *i;

	if (k < len && s[k] == '-')
		k++;
	if (k >= len || !is_digit(s[k]))
		return 0;
	if (s[k] == '0')
		k++;
	else
		while (k < len && is_digit(s[k]))
			k++;
	if (k < len && s[k] == '.') {
		k++;
		if (k >= len || !is_digit(s[k]))
			return 0;
		while (k < len && is_digit(s[k]))
			k++;
	}
	if (k < len && (s[k] == 'e' || s[k] == 'E')) {
		k++;
		if (k < len && (s[k] == '+' || s[k] == '-'))
			k++;
		if (k >= len || !is_digit(s[k]))
			return 0;
		while (k < len && is_digit(s[k]))
			k++;
	}
	*i = k;
	return 1;
}

static int
literal(const unsigned char *s, size_t len, size_t *i, const char *word)
{
	size_t n = strlen(word);

	if (len - *i < n || memcmp(s + *i, word, n))
		return 0;
	*i += n;
	return 1;
}

int
proto__value(const unsigned char *s, size_t len, size_t *i, int depth,
	     int max_depth)
{
	size_t k = *i, dummy;
	int r;

	if (k >= len)
		return 0;
	switch (s[k]) {
	case '{':
	case '[': {
		unsigned char close = s[k] == '{' ? '}' : ']';

		if (depth + 1 > max_depth)
			return -1;
		k = proto__ws(s, len, k + 1);
		if (k < len && s[k] == close) {
			*i = k + 1;
			return 1;
		}
		for (;;) {
			if (close == '}') {
				if (!proto__string(s, len, &k, NULL, 0, &dummy))
					return 0;
				k = proto__ws(s, len, k);
				if (k >= len || s[k] != ':')
					return 0;
				k = proto__ws(s, len, k + 1);
			}
			r = proto__value(s, len, &k, depth + 1, max_depth);
			if (r != 1)
				return r;
			k = proto__ws(s, len, k);
			if (k >= len)
				return 0;
			if (s[k] == close) {
				*i = k + 1;
				return 1;
			}
			if (s[k] != ',')
				return 0;
			k = proto__ws(s, len, k + 1);
		}
	}
	case '"':
		r = proto__string(s, len, &k, NULL, 0, &dummy);
		break;
	case 't':
		r = literal(s, len, &k, "true");
		break;
	case 'f':
		r = literal(s, len, &k, "false");
		break;
	case 'n':
		r = literal(s, len, &k, "null");
		break;
	default:
		r = number(s, len, &k);
		break;
	}
	if (r)
		*i = k;
	return r;
}

int
proto_json_valid(const void *p, size_t len)
{
	const unsigned char *s = p;
	size_t i;

	if (!p || !len)
		return 0;
	i = proto__ws(s, len, 0);
	if (proto__value(s, len, &i, 0, PROTO_JSON_MAX_DEPTH) != 1)
		return 0;
	/* "01", "1 2", "{} x": whatever follows the value must be space */
	return proto__ws(s, len, i) == len;
}

enum proto_pl
proto_payload_kind(const void *p, size_t len)
{
	if (!proto_utf8_valid(p, len))
		return PROTO_PL_BINARY;
	if (proto_json_valid(p, len))
		return PROTO_PL_JSON;
	return PROTO_PL_TEXT;
}
