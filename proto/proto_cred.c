/*
 * proto_cred.c - the device id and the credentials of an upgrade request
 * (docs/protocol.md "Connecting"). Pure, any thread.
 *
 * The HTTP parser hands over decoded bytes: "%00" in a path or query is a
 * NUL here, and a raw NUL in a header survives into the value. A C string
 * function would stop there and compare a prefix, so every check runs over
 * the full length the parser reported, and a NUL, CR, LF or any other
 * control byte inside an id or a token refuses it instead of cutting it.
 */
#include "proto.h"

#include <string.h>
#include <strings.h>

#define DEVICE_PATH "/v1/devices/"

int
proto_device_path(const char *path, size_t len, const char **id, size_t *idlen)
{
	size_t n = sizeof(DEVICE_PATH) - 1;

	*id = NULL;
	*idlen = 0;
	if (!path || len < n || memcmp(path, DEVICE_PATH, n))
		return HUB_ERR_NOTFOUND;
	if (!proto_id_valid(path + n, len - n))
		return HUB_ERR_INVAL;
	*id = path + n;
	*idlen = len - n;
	return HUB_OK;
}

int
proto_token_ok(const char *tok, size_t len)
{
	size_t i;

	if (!tok || len < 1 || len > PROTO_TOKEN_MAX)
		return 0;
	for (i = 0; i < len; i++)
		if ((unsigned char)tok[i] < 0x21 ||
		    (unsigned char)tok[i] > 0x7e)
			return 0;
	return 1;
}

int
proto_cred_bearer(const char *v, size_t len, const char **tok, size_t *toklen)
{
	size_t i = 6, end = len;

	*tok = NULL;
	*toklen = 0;
	if (!v || len < 7 || strncasecmp(v, "Bearer", 6) ||
	    (v[6] != ' ' && v[6] != '\t'))
		return HUB_ERR_NOTFOUND;
	while (i < len && (v[i] == ' ' || v[i] == '\t'))
		i++;
	/* RFC 9110 5.5: whitespace around a field value is not part of it */
	while (end > i && (v[end - 1] == ' ' || v[end - 1] == '\t'))
		end--;
	if (!proto_token_ok(v + i, end - i))
		return HUB_ERR_INVAL;
	*tok = v + i;
	*toklen = end - i;
	return HUB_OK;
}

int
proto_cred_urlarg(const char *a, size_t len, const char *name, const char **val,
		  size_t *vlen)
{
	size_t n = name ? strlen(name) : 0;

	*val = NULL;
	*vlen = 0;
	if (!a || !n || len <= n || memcmp(a, name, n) || a[n] != '=')
		return HUB_ERR_NOTFOUND;
	if (!proto_token_ok(a + n + 1, len - n - 1))
		return HUB_ERR_INVAL;
	*val = a + n + 1;
	*vlen = len - n - 1;
	return HUB_OK;
}

int
proto_subprotocols(const char *v, size_t len, int *has_v1, const char **tok,
		   size_t *toklen)
{
	static const char bearer[] = "bearer.";
	const size_t bl = sizeof(bearer) - 1;
	size_t i = 0;

	*has_v1 = 0;
	*tok = NULL;
	*toklen = 0;
	if (!v)
		return HUB_OK;
	while (i < len) {
		size_t a, b;

		while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		a = i;
		while (i < len && v[i] != ',' && v[i] != ' ' && v[i] != '\t')
			i++;
		b = i;
		if (a == b)
			continue;
		if (b - a == 6 && !memcmp(v + a, "hub.v1", 6)) {
			*has_v1 = 1;
		} else if (b - a > bl && !memcmp(v + a, bearer, bl)) {
			if (*tok || !proto_token_ok(v + a + bl, b - a - bl))
				return HUB_ERR_INVAL;
			*tok = v + a + bl;
			*toklen = b - a - bl;
		} else {
			/* RFC 6455: subprotocol names are tokens */
			size_t k;

			for (k = a; k < b; k++)
				if ((unsigned char)v[k] < 0x21 ||
				    (unsigned char)v[k] > 0x7e)
					return HUB_ERR_INVAL;
		}
	}
	return HUB_OK;
}
