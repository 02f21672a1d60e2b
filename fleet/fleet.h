/*
 * fleet.h - signed fleet tokens: device credentials every hub accepts.
 *
 * A fleet token is a JWT (RFC 7519) in JWS compact form (RFC 7515) signed
 * with ES256 (RFC 7518 3.4: ECDSA P-256 over SHA-256, signature r||s):
 *   header  {"alg":"ES256","typ":"JWT"}
 *   claims  {"sub":ID,"iat":S,"exp":S,"jti":HEX,"groups":[G,...]}
 * hubctl signs with the fleet's private key (fleet init); hubd verifies
 * with the public key(s) of --token-key and never reads the private key.
 *
 * Two layers:
 *   jwt.c  the pure rules (base64url, r||s <-> DER, header and claims
 *          parsing and checking); no I/O, unit-tested alone.
 *   keys.c mbedTLS: key generation, loading, signing and verification.
 *
 * A library: returns enum hub_err codes and never logs. No global state;
 * a struct fleet_keys is immutable once loaded and may be read from any
 * thread (hubd: each worker's service thread owns its own copy).
 */
#ifndef FLEET_H
#define FLEET_H

#include <stddef.h>
#include <stdint.h>

#include "hub_err.h"
#include "hub_util.h"

#define FLEET_TOKEN_MAX 1024 /* = PROTO_TOKEN_MAX: what a device may send */
#define FLEET_GROUPS_MAX 16  /* groups carried in one token */
#define FLEET_GROUP_MAX 64   /* group names: [A-Za-z0-9_-]{1,64} */
#define FLEET_JTI_MAX 64     /* jti text, bytes */
#define FLEET_LEEWAY_S 60    /* clock skew allowed on exp and nbf */
#define FLEET_KEYS_MAX 2     /* --token-key FILE[,FILE]: rotation */
#define FLEET_SIG_LEN 64     /* ES256 r||s */

struct fleet_claims {
	char sub[HUB_ID_MAX + 1];
	int64_t iat, exp, nbf; /* s since epoch; nbf 0 when absent */
	char jti[FLEET_JTI_MAX + 1];
	int ngroups;
	char groups[FLEET_GROUPS_MAX][FLEET_GROUP_MAX + 1];
};

/* A parsed (not yet verified) token: the claims, the bytes the signature
 * covers (a prefix of the token: header "." payload) and the signature. */
struct fleet_jwt {
	size_t signed_len;
	uint8_t sig[FLEET_SIG_LEN];
	struct fleet_claims claims;
};

/* ---- pure rules (jwt.c) ---------------------------------------------- */

/*
 * base64url without padding (RFC 4648 5, RFC 7515 2). Encode: HUB_OK and
 * *outlen (NUL written after), HUB_ERR_TOOBIG if out[cap] is short.
 * Decode: HUB_ERR_INVAL for any byte outside the alphabet, '=' padding, a
 * length of 1 mod 4 or non-zero trailing bits (one text per value).
 */
int fleet_b64url_encode(const uint8_t *in, size_t len, char *out, size_t cap,
			size_t *outlen);
int fleet_b64url_decode(const char *in, size_t len, uint8_t *out, size_t cap,
			size_t *outlen);
/*
 * ECDSA signature forms: JWS's fixed r||s (32 + 32 bytes) and the ASN.1
 * DER SEQUENCE { INTEGER r, INTEGER s } that mbedTLS speaks. from_der
 * accepts only minimal DER with 1..32-byte positive values (HUB_ERR_INVAL).
 */
int fleet_sig_to_der(const uint8_t rs[FLEET_SIG_LEN], uint8_t *der, size_t cap,
		     size_t *len);
int fleet_sig_from_der(const uint8_t *der, size_t len,
		       uint8_t rs[FLEET_SIG_LEN]);
/* 1 if tok[0..len) has the shape of a JWS compact token (three base64url
 * parts); a cheap test to tell signed tokens from opaque ones. */
int fleet_jwt_shape(const char *tok, size_t len);
/*
 * Splits and parses tok[0..len) without checking the signature: header
 * must be a JSON object with "alg":"ES256" (never "none", never HS256 or
 * RS256), "typ" absent or "JWT", no "crit"; claims an object with string "sub"
 * (a valid device id), numeric "iat" and "exp", optional "nbf", optional string
 * "jti", optional "groups" (array of valid group names, at most
 * FLEET_GROUPS_MAX). HUB_OK or HUB_ERR_INVAL / HUB_ERR_TOOBIG.
 */
int fleet_jwt_parse(const char *tok, size_t len, struct fleet_jwt *out);
/*
 * The time and subject rules: sub equals id exactly; now < exp + leeway;
 * nbf (if any) <= now + leeway; iat <= now + leeway. HUB_OK or
 * HUB_ERR_AUTH.
 */
int fleet_claims_check(const struct fleet_claims *c, const char *id,
		       int64_t now, int leeway);
/* The claims as the JSON payload hubctl signs, into out[cap]. */
int fleet_claims_json(const struct fleet_claims *c, char *out, size_t cap,
		      size_t *len);
/* 1 if g is a valid group name ([A-Za-z0-9_-]{1,64}). */
int fleet_group_valid(const char *g, size_t len);

/* ---- keys (keys.c, mbedTLS) ------------------------------------------ */

struct fleet_keys;

/*
 * Loads the public keys of a comma list of PEM files (at most
 * FLEET_KEYS_MAX), each an EC P-256 key. *out NULL and err filled on
 * failure (HUB_ERR_INVAL / HUB_ERR_IO). Caller frees with fleet_keys_free.
 */
int fleet_keys_load(const char *list, struct fleet_keys **out, char *err,
		    size_t errlen);
/* Accepts NULL. */
void fleet_keys_free(struct fleet_keys *k);
/*
 * Verifies token tok[0..len) for device id at time now (s since epoch):
 * shape, header, signature against any loaded key, claims. HUB_OK with
 * *claims filled (if not NULL), HUB_ERR_AUTH for anything else.
 */
int fleet_token_verify(const struct fleet_keys *k, const char *id,
		       const char *tok, size_t len, int64_t now,
		       struct fleet_claims *claims);

/*
 * Creates DIR/fleet.key (private, 0600, refused if it exists) and
 * DIR/fleet.pub (public, PEM). HUB_OK, HUB_ERR_EXISTS, HUB_ERR_IO or
 * HUB_ERR_TLS with err filled.
 */
int fleet_keygen(const char *dir, char *err, size_t errlen);
/*
 * Signs claims with the private key file keyfile: the compact token into
 * out[cap] (NUL-terminated). HUB_OK or an error with err filled.
 */
int fleet_token_sign(const char *keyfile, const struct fleet_claims *c,
		     char *out, size_t cap, char *err, size_t errlen);

/* ---- revocations (revoked.c) ---------------------------------------- */

/*
 * hub/revoked/{id} (retained): signed tokens of id issued before "before"
 * (s since epoch) are void. One table per hubd worker, used by its
 * service thread only.
 */
struct fleet_revoked;
int fleet_revoked_new(struct fleet_revoked **out);
void fleet_revoked_free(struct fleet_revoked *r); /* accepts NULL */
/* Records (before > 0) or clears (before == 0) id's revocation; all = 1
 * voids every token of id whatever its iat. */
int fleet_revoked_set(struct fleet_revoked *r, const char *id, int64_t before,
		      int all);
/* 1 if a token of id issued at iat is void. */
int fleet_revoked_voids(const struct fleet_revoked *r, const char *id,
			int64_t iat);
/* The revocation time of id, 0 when none. */
int64_t fleet_revoked_before(const struct fleet_revoked *r, const char *id);
size_t fleet_revoked_count(const struct fleet_revoked *r);
/*
 * The payload of hub/revoked/{id}: {"before":T[,"reason":R]} -> HUB_OK,
 * *before = T, *all = 1 for R "disabled" or "deleted" (every token void),
 * reason (if not NULL) the text or ""; an empty payload (the retained
 * message cleared) -> HUB_OK with *before = 0; else HUB_ERR_INVAL.
 */
int fleet_revocation_parse(const void *payload, size_t len, int64_t *before,
			   int *all, char *reason, size_t cap);

#endif
