/*
 * jwt.c - the pure rules of fleet tokens: base64url, ECDSA signature forms,
 * the JWS header and the JWT claims (RFC 7515, 7518 3.4, 7519).
 *
 * No I/O, no clock, no keys: the caller passes "now" and checks the
 * signature (keys.c). Everything here is bounded by FLEET_TOKEN_MAX and
 * rejects rather than repairs: one accepted text per token.
 *
 * Threads: pure functions, any thread.
 */
#include "fleet.h"

#include <cjson/cJSON.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

static const char b64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int
fleet_b64url_encode(const uint8_t *in, size_t len, char *out, size_t cap,
		    size_t *outlen)
{
	size_t need = len / 3 * 4 + (len % 3 ? len % 3 + 1 : 0), i, o = 0;

	if (outlen)
		*outlen = 0;
	if (!out || (!in && len) || need + 1 > cap)
		return HUB_ERR_TOOBIG;
	for (i = 0; i + 2 < len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 |
			     in[i + 2];

		out[o++] = b64url[v >> 18 & 63];
		out[o++] = b64url[v >> 12 & 63];
		out[o++] = b64url[v >> 6 & 63];
		out[o++] = b64url[v & 63];
	}
	if (len - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;

		out[o++] = b64url[v >> 18 & 63];
		out[o++] = b64url[v >> 12 & 63];
	} else if (len - i == 2) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;

		out[o++] = b64url[v >> 18 & 63];
		out[o++] = b64url[v >> 12 & 63];
		out[o++] = b64url[v >> 6 & 63];
	}
	out[o] = '\0';
	if (outlen)
		*outlen = o;
	return HUB_OK;
}

static int
b64val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

int
fleet_b64url_decode(const char *in, size_t len, uint8_t *out, size_t cap,
		    size_t *outlen)
{
	size_t need = len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0), i, o = 0;
	uint32_t acc = 0;
	int bits = 0;

	if (outlen)
		*outlen = 0;
	if (len % 4 == 1 || (!in && len))
		return HUB_ERR_INVAL;
	if (need > cap)
		return HUB_ERR_TOOBIG;
	for (i = 0; i < len; i++) {
		int v = b64val((unsigned char)in[i]);

		if (v < 0)
			return HUB_ERR_INVAL;
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (uint8_t)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	if (acc) /* non-zero pad bits: another text for the same bytes */
		return HUB_ERR_INVAL;
	if (outlen)
		*outlen = o;
	return HUB_OK;
}

/* ---- r||s <-> DER ----------------------------------------------------- */

/* One 32-byte big-endian value as a DER INTEGER into p (<= 35 bytes). */
static size_t
der_int(const uint8_t *v, uint8_t *p)
{
	size_t skip = 0, n;

	while (skip < 31 && v[skip] == 0)
		skip++;
	n = 32 - skip;
	p[0] = 0x02;
	if (v[skip] & 0x80) {
		p[1] = (uint8_t)(n + 1);
		p[2] = 0;
		memcpy(p + 3, v + skip, n);
		return n + 3;
	}
	p[1] = (uint8_t)n;
	memcpy(p + 2, v + skip, n);
	return n + 2;
}

int
fleet_sig_to_der(const uint8_t rs[FLEET_SIG_LEN], uint8_t *der, size_t cap,
		 size_t *len)
{
	uint8_t body[70];
	size_t n;

	if (len)
		*len = 0;
	if (!rs || !der)
		return HUB_ERR_INVAL;
	n = der_int(rs, body);
	n += der_int(rs + 32, body + n);
	if (n + 2 > cap)
		return HUB_ERR_TOOBIG;
	der[0] = 0x30;
	der[1] = (uint8_t)n; /* <= 70: short form */
	memcpy(der + 2, body, n);
	if (len)
		*len = n + 2;
	return HUB_OK;
}

/* A minimal DER INTEGER at der[*pos..end) into out[32]. */
static int
der_get_int(const uint8_t *der, size_t end, size_t *pos, uint8_t out[32])
{
	size_t p = *pos, n;

	if (end - p < 3 || der[p] != 0x02)
		return HUB_ERR_INVAL;
	n = der[p + 1];
	p += 2;
	if (n == 0 || n > 33 || n > end - p)
		return HUB_ERR_INVAL;
	if (der[p] & 0x80) /* negative */
		return HUB_ERR_INVAL;
	if (der[p] == 0 && (n == 1 || !(der[p + 1] & 0x80)))
		return HUB_ERR_INVAL; /* not minimal (or zero) */
	if (der[p] == 0) {
		p++;
		n--;
	}
	if (n > 32)
		return HUB_ERR_INVAL;
	memset(out, 0, 32);
	memcpy(out + 32 - n, der + p, n);
	*pos = p + n;
	return HUB_OK;
}

int
fleet_sig_from_der(const uint8_t *der, size_t len, uint8_t rs[FLEET_SIG_LEN])
{
	size_t pos = 2;

	if (!der || !rs || len < 8 || len > 72 || der[0] != 0x30 ||
	    der[1] & 0x80 || (size_t)der[1] != len - 2)
		return HUB_ERR_INVAL;
	if (der_get_int(der, len, &pos, rs) ||
	    der_get_int(der, len, &pos, rs + 32) || pos != len)
		return HUB_ERR_INVAL;
	return HUB_OK;
}

/* ---- header and claims ------------------------------------------------ */

int
fleet_group_valid(const char *g, size_t len)
{
	size_t i;

	if (!g || len < 1 || len > FLEET_GROUP_MAX)
		return 0;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)g[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		      (c >= '0' && c <= '9') || c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

static int
id_valid(const char *s)
{
	/* device ids and group names share one alphabet and cap */
	size_t n = strnlen(s, HUB_ID_MAX + 1);

	return n <= HUB_ID_MAX && fleet_group_valid(s, n);
}

int
fleet_jwt_shape(const char *tok, size_t len)
{
	size_t i, dots = 0, part = 0;

	if (!tok || len < 5 || len > FLEET_TOKEN_MAX)
		return 0;
	for (i = 0; i < len; i++) {
		if (tok[i] == '.') {
			if (!part)
				return 0;
			dots++;
			part = 0;
		} else if (b64val((unsigned char)tok[i]) < 0) {
			return 0;
		} else {
			part++;
		}
	}
	return dots == 2 && part;
}

/* An object from base64url text; NULL for anything else. Duplicate names
 * are refused (two "alg" members must not mean two things). */
static cJSON *
json_part(const char *b, size_t len)
{
	uint8_t raw[FLEET_TOKEN_MAX];
	size_t n;
	cJSON *o, *a, *c;

	if (fleet_b64url_decode(b, len, raw, sizeof(raw), &n) || !n)
		return NULL;
	o = cJSON_ParseWithLength((const char *)raw, n);
	if (!o)
		return NULL;
	if (!cJSON_IsObject(o))
		goto bad;
	for (a = o->child; a; a = a->next)
		for (c = a->next; c; c = c->next)
			if (!strcmp(a->string, c->string))
				goto bad;
	return o;
bad:
	cJSON_Delete(o);
	return NULL;
}

/* A NumericDate: an integer number of seconds, 0 < v < 2^53. */
static int
num_date(const cJSON *o, const char *name, int required, int64_t *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

	*out = 0;
	if (!v)
		return required ? HUB_ERR_INVAL : HUB_OK;
	if (!cJSON_IsNumber(v) || !(v->valuedouble > 0) ||
	    v->valuedouble > 9007199254740992.0 ||
	    floor(v->valuedouble) != v->valuedouble)
		return HUB_ERR_INVAL;
	*out = (int64_t)v->valuedouble;
	return HUB_OK;
}

static int
parse_header(const char *b, size_t len)
{
	cJSON *h = json_part(b, len);
	const cJSON *alg, *typ;
	int rc = HUB_ERR_INVAL;

	if (!h)
		return HUB_ERR_INVAL;
	alg = cJSON_GetObjectItemCaseSensitive(h, "alg");
	typ = cJSON_GetObjectItemCaseSensitive(h, "typ");
	/* ES256 only: "none" and HS256 (a public key used as an HMAC
	 * secret) are the classic forgeries */
	if (!cJSON_IsString(alg) || strcmp(alg->valuestring, "ES256"))
		goto out;
	if (typ && (!cJSON_IsString(typ) || strcmp(typ->valuestring, "JWT")))
		goto out;
	if (cJSON_GetObjectItemCaseSensitive(h, "crit"))
		goto out; /* extensions we do not understand must fail */
	rc = HUB_OK;
out:
	cJSON_Delete(h);
	return rc;
}

static int
parse_claims(const char *b, size_t len, struct fleet_claims *c)
{
	cJSON *o = json_part(b, len);
	const cJSON *sub, *jti, *groups, *g;
	int rc = HUB_ERR_INVAL;

	if (!o)
		return HUB_ERR_INVAL;
	sub = cJSON_GetObjectItemCaseSensitive(o, "sub");
	if (!cJSON_IsString(sub) || !id_valid(sub->valuestring))
		goto out;
	snprintf(c->sub, sizeof(c->sub), "%s", sub->valuestring);
	if (num_date(o, "iat", 1, &c->iat) || num_date(o, "exp", 1, &c->exp) ||
	    num_date(o, "nbf", 0, &c->nbf))
		goto out;
	jti = cJSON_GetObjectItemCaseSensitive(o, "jti");
	if (jti) {
		if (!cJSON_IsString(jti) ||
		    strlen(jti->valuestring) > FLEET_JTI_MAX)
			goto out;
		snprintf(c->jti, sizeof(c->jti), "%s", jti->valuestring);
	}
	groups = cJSON_GetObjectItemCaseSensitive(o, "groups");
	if (groups) {
		if (!cJSON_IsArray(groups))
			goto out;
		cJSON_ArrayForEach(g, groups)
		{
			if (c->ngroups >= FLEET_GROUPS_MAX ||
			    !cJSON_IsString(g) ||
			    !fleet_group_valid(
				g->valuestring,
				strnlen(g->valuestring, FLEET_GROUP_MAX + 1)))
				goto out;
			snprintf(c->groups[c->ngroups++], sizeof(c->groups[0]),
				 "%s", g->valuestring);
		}
	}
	rc = HUB_OK;
out:
	cJSON_Delete(o);
	return rc;
}

int
fleet_jwt_parse(const char *tok, size_t len, struct fleet_jwt *out)
{
	const char *d1, *d2;
	size_t n;

	if (!out)
		return HUB_ERR_INVAL;
	memset(out, 0, sizeof(*out));
	if (!tok || len > FLEET_TOKEN_MAX)
		return HUB_ERR_TOOBIG;
	if (!fleet_jwt_shape(tok, len))
		return HUB_ERR_INVAL;
	d1 = memchr(tok, '.', len);
	d2 = memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - tok));
	if (parse_header(tok, (size_t)(d1 - tok)) ||
	    parse_claims(d1 + 1, (size_t)(d2 - d1 - 1), &out->claims))
		goto bad;
	if (fleet_b64url_decode(d2 + 1, len - (size_t)(d2 + 1 - tok), out->sig,
				sizeof(out->sig), &n) ||
	    n != FLEET_SIG_LEN)
		goto bad;
	out->signed_len = (size_t)(d2 - tok);
	return HUB_OK;
bad:
	memset(out, 0, sizeof(*out));
	return HUB_ERR_INVAL;
}

int
fleet_claims_check(const struct fleet_claims *c, const char *id, int64_t now,
		   int leeway)
{
	if (!c || !id || strcmp(c->sub, id))
		return HUB_ERR_AUTH;
	if (now >= c->exp + leeway)
		return HUB_ERR_AUTH; /* expired */
	if (c->nbf && c->nbf > now + leeway)
		return HUB_ERR_AUTH; /* not yet valid */
	if (c->iat > now + leeway)
		return HUB_ERR_AUTH; /* issued in the future */
	return HUB_OK;
}

int
fleet_claims_json(const struct fleet_claims *c, char *out, size_t cap,
		  size_t *len)
{
	cJSON *o = NULL, *g;
	char *s = NULL;
	int i, rc = HUB_ERR_NOMEM;
	size_t n;

	if (len)
		*len = 0;
	if (!c || !out || !id_valid(c->sub))
		return HUB_ERR_INVAL;
	o = cJSON_CreateObject();
	if (!o || !cJSON_AddStringToObject(o, "sub", c->sub) ||
	    !cJSON_AddNumberToObject(o, "iat", (double)c->iat) ||
	    !cJSON_AddNumberToObject(o, "exp", (double)c->exp))
		goto out;
	if (c->nbf && !cJSON_AddNumberToObject(o, "nbf", (double)c->nbf))
		goto out;
	if (c->jti[0] && !cJSON_AddStringToObject(o, "jti", c->jti))
		goto out;
	g = cJSON_AddArrayToObject(o, "groups");
	if (!g)
		goto out;
	for (i = 0; i < c->ngroups; i++) {
		cJSON *e = cJSON_CreateString(c->groups[i]);

		if (!e || !cJSON_AddItemToArray(g, e)) {
			cJSON_Delete(e);
			goto out;
		}
	}
	s = cJSON_PrintUnformatted(o);
	if (!s)
		goto out;
	n = strlen(s);
	rc = HUB_ERR_TOOBIG;
	if (n + 1 > cap)
		goto out;
	memcpy(out, s, n + 1);
	if (len)
		*len = n;
	rc = HUB_OK;
out:
	cJSON_free(s);
	cJSON_Delete(o);
	return rc;
}
