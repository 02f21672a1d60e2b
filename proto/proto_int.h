/*
 * proto_int.h - private to the proto module: the JSON scanner shared by
 * proto_json.c (validation) and proto_frame.c (the envelope). Pure.
 */
#ifndef PROTO_INT_H
#define PROTO_INT_H

#include "proto.h"

/* Index of the first non-whitespace byte at or after i (RFC 8259 ws). */
size_t proto__ws(const unsigned char *s, size_t len, size_t i);
/*
 * Scans one JSON value at s[*i], nested inside depth containers, allowing
 * at most max_depth. 1 and *i past the value; 0 on a syntax error; -1 when
 * it nests deeper than max_depth.
 */
int proto__value(const unsigned char *s, size_t len, size_t *i, int depth,
		 int max_depth);
/*
 * Scans the JSON string at s[*i] == '"' and decodes it: escapes resolved,
 * a surrogate pair joined into one UTF-8 sequence, \u0000 kept as a 0 byte.
 * Up to cap bytes go to out (NULL: none); *outlen gets the full decoded
 * length, which may exceed cap. 1 and *i past the closing quote, or 0 for
 * a raw control character, a bad escape, a lone surrogate or no end.
 */
int proto__string(const unsigned char *s, size_t len, size_t *i, char *out,
		  size_t cap, size_t *outlen);

#endif
