/*
 * bridge_payload.c - UTF-8 validation and the downlink payload mapping
 * (DESIGN.md "Guarantees": an MQTT payload that is valid JSON reaches the
 * device as that JSON value, other valid UTF-8 as a JSON string, anything
 * else as a binary frame).
 *
 * Pure functions, safe from any thread. JSON structure is checked by cJSON;
 * cJSON is lenient in places JSON is not (it takes "01", "1." and raw
 * control characters inside strings), and a device must never receive a
 * "JSON value" that is not JSON, so a small lexical pass checks numbers and
 * strings strictly first. cJSON is given a NUL-terminated copy: MQTT
 * payloads are not terminated.
 */
#include "bridge_int.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

int
bridge_utf8_valid(const void *p, size_t len)
{
	const unsigned char *s = p;
	size_t i = 0;

	if (!p && len)
		return 0;
	while (i < len) {
		unsigned c = s[i];
		size_t n;
		unsigned cp, min;

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

static int
is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static int
is_hex(char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Strict number at s[*i]: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int
lex_number(const char *s, size_t len, size_t *i)
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
	/* "01", "1.2.3": a number runs into another number character */
	if (k < len && (is_digit(s[k]) || s[k] == '.' || s[k] == '-' ||
			s[k] == '+' || s[k] == 'e' || s[k] == 'E'))
		return 0;
	*i = k;
	return 1;
}

/* Strict string at s[*i] == '"': no raw control characters, valid escapes. */
static int
lex_string(const char *s, size_t len, size_t *i)
{
	size_t k = *i + 1;

	while (k < len) {
		unsigned char c = (unsigned char)s[k];

		if (c == '"') {
			*i = k + 1;
			return 1;
		}
		if (c < 0x20)
			return 0;
		if (c == '\\') {
			if (++k >= len)
				return 0;
			if (s[k] == 'u') {
				if (len - k < 5 || !is_hex(s[k + 1]) ||
				    !is_hex(s[k + 2]) || !is_hex(s[k + 3]) ||
				    !is_hex(s[k + 4]))
					return 0;
				k += 4;
			} else if (!s[k] || !strchr("\"\\/bfnrt", s[k])) {
				return 0;
			}
		}
		k++;
	}
	return 0;
}

static int
lex_strict(const char *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		if (s[i] == '"') {
			if (!lex_string(s, len, &i))
				return 0;
		} else if (s[i] == '-' || is_digit(s[i])) {
			if (!lex_number(s, len, &i))
				return 0;
		} else {
			i++; /* structure and literals: cJSON checks them */
		}
	}
	return 1;
}

int
bridge__json_valid(const char *s, size_t len)
{
	const char *end = NULL;
	cJSON *v;
	char *copy;
	int ok = 0;

	if (!s || !len || !lex_strict(s, len))
		return 0;
	copy = malloc(len + 1);
	if (!copy)
		return 0;
	memcpy(copy, s, len);
	copy[len] = '\0';
	/* length includes the NUL, as cJSON_ParseWithOpts does */
	v = cJSON_ParseWithLengthOpts(copy, len + 1, &end, 0);
	if (v && end && end >= copy && end <= copy + len) {
		ok = 1;
		for (; end < copy + len; end++)
			if (!is_ws(*end))
				ok = 0;
	}
	cJSON_Delete(v);
	free(copy);
	return ok;
}

enum bridge_pl
bridge_payload_kind(const void *p, size_t len)
{
	if (!bridge_utf8_valid(p, len))
		return BRIDGE_PL_BINARY;
	if (bridge__json_valid(p, len))
		return BRIDGE_PL_JSON;
	return BRIDGE_PL_TEXT;
}
