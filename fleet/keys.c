/*
 * keys.c - the fleet's key pair with mbedTLS: generation (hubctl fleet
 * init), signing (hubctl device add --signed), verification (hubd
 * --token-key). The token rules themselves are in jwt.c.
 *
 * Threads: fleet_keys is immutable after fleet_keys_load, but an
 * mbedtls_pk_context is not documented as safe for concurrent verifies, so
 * each hubd worker loads its own (one service thread per worker).
 */
#include "fleet.h"

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct fleet_keys {
	int n;
	mbedtls_pk_context pk[FLEET_KEYS_MAX];
};

static void
seterr(char *err, size_t errlen, const char *fmt, const char *arg)
{
	if (err && errlen)
		snprintf(err, errlen, fmt, arg);
}

/* 1 if pk holds an EC key on P-256: nothing else may sign ES256. */
static int
is_p256(const mbedtls_pk_context *pk)
{
	if (mbedtls_pk_get_type(pk) != MBEDTLS_PK_ECKEY &&
	    mbedtls_pk_get_type(pk) != MBEDTLS_PK_ECDSA)
		return 0;
	return mbedtls_ecp_keypair_get_group_id(mbedtls_pk_ec(*pk)) ==
	       MBEDTLS_ECP_DP_SECP256R1;
}

void
fleet_keys_free(struct fleet_keys *k)
{
	int i;

	if (!k)
		return;
	for (i = 0; i < k->n; i++)
		mbedtls_pk_free(&k->pk[i]);
	free(k);
}

int
fleet_keys_load(const char *list, struct fleet_keys **out, char *err,
		size_t errlen)
{
	struct fleet_keys *k;
	const char *p = list;
	int rc = HUB_ERR_INVAL;

	if (out)
		*out = NULL;
	if (!list || !out || !list[0]) {
		seterr(err, errlen, "%s", "no key file");
		return HUB_ERR_INVAL;
	}
	k = calloc(1, sizeof(*k));
	if (!k)
		return HUB_ERR_NOMEM;
	while (*p) {
		const char *e = strchr(p, ',');
		size_t n = e ? (size_t)(e - p) : strlen(p);
		char path[512];

		if (!n || n >= sizeof(path)) {
			seterr(err, errlen, "%s", "bad key file list");
			goto fail;
		}
		if (k->n == FLEET_KEYS_MAX) {
			seterr(err, errlen, "%s", "at most 2 key files");
			goto fail;
		}
		memcpy(path, p, n);
		path[n] = '\0';
		mbedtls_pk_init(&k->pk[k->n]);
		if (mbedtls_pk_parse_public_keyfile(&k->pk[k->n], path)) {
			k->n++;
			seterr(err, errlen, "%s: not a PEM public key", path);
			rc = HUB_ERR_IO;
			goto fail;
		}
		if (!is_p256(&k->pk[k->n++])) {
			seterr(err, errlen, "%s: not an EC P-256 key", path);
			goto fail;
		}
		p += n;
		if (*p == ',')
			p++;
	}
	*out = k;
	return HUB_OK;
fail:
	fleet_keys_free(k);
	return rc;
}

int
fleet_token_verify(const struct fleet_keys *k, const char *id, const char *tok,
		   size_t len, int64_t now, struct fleet_claims *claims)
{
	struct fleet_jwt j;
	uint8_t hash[32], der[80];
	size_t dlen;
	int i, ok = 0;

	if (claims)
		memset(claims, 0, sizeof(*claims));
	if (!k || !k->n || fleet_jwt_parse(tok, len, &j) ||
	    fleet_sig_to_der(j.sig, der, sizeof(der), &dlen))
		return HUB_ERR_AUTH;
	if (mbedtls_sha256((const unsigned char *)tok, j.signed_len, hash, 0))
		return HUB_ERR_AUTH;
	for (i = 0; i < k->n && !ok; i++)
		ok = !mbedtls_pk_verify((mbedtls_pk_context *)&k->pk[i],
					MBEDTLS_MD_SHA256, hash, sizeof(hash),
					der, dlen);
	if (!ok || fleet_claims_check(&j.claims, id, now, FLEET_LEEWAY_S))
		return HUB_ERR_AUTH;
	if (claims)
		*claims = j.claims;
	return HUB_OK;
}

/* ---- signing side (hubctl) ------------------------------------------ */

struct rng {
	mbedtls_entropy_context ent;
	mbedtls_ctr_drbg_context drbg;
};

static int
rng_init(struct rng *r)
{
	static const unsigned char pers[] = "hub-fleet";

	mbedtls_entropy_init(&r->ent);
	mbedtls_ctr_drbg_init(&r->drbg);
	return mbedtls_ctr_drbg_seed(&r->drbg, mbedtls_entropy_func, &r->ent,
				     pers, sizeof(pers) - 1)
		   ? HUB_ERR_TLS
		   : HUB_OK;
}

static void
rng_free(struct rng *r)
{
	mbedtls_ctr_drbg_free(&r->drbg);
	mbedtls_entropy_free(&r->ent);
}

/* Writes buf to path, created with mode (O_EXCL: never overwritten). */
static int
write_new(const char *path, const unsigned char *buf, size_t len, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	size_t off = 0;

	if (fd < 0)
		return errno == EEXIST ? HUB_ERR_EXISTS : HUB_ERR_IO;
	/* the umask may have widened nothing, but make 0600 explicit */
	if (fchmod(fd, mode))
		goto fail;
	while (off < len) {
		ssize_t w = write(fd, buf + off, len - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			goto fail;
		off += (size_t)w;
	}
	if (fsync(fd) || close(fd)) {
		unlink(path);
		return HUB_ERR_IO;
	}
	return HUB_OK;
fail:
	close(fd);
	unlink(path);
	return HUB_ERR_IO;
}

int
fleet_keygen(const char *dir, char *err, size_t errlen)
{
	char kpath[600], ppath[600];
	unsigned char pem[1024];
	mbedtls_pk_context pk;
	struct rng r;
	int rc = HUB_ERR_TLS;
	struct stat st;

	if (!dir || strlen(dir) > 512) {
		seterr(err, errlen, "%s", "bad directory");
		return HUB_ERR_INVAL;
	}
	snprintf(kpath, sizeof(kpath), "%s/fleet.key", dir);
	snprintf(ppath, sizeof(ppath), "%s/fleet.pub", dir);
	if (!stat(kpath, &st) || !stat(ppath, &st)) {
		seterr(err, errlen, "%s: fleet key exists", dir);
		return HUB_ERR_EXISTS;
	}
	mbedtls_pk_init(&pk);
	if (rng_init(&r) ||
	    mbedtls_pk_setup(&pk,
			     mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)) ||
	    mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(pk),
				mbedtls_ctr_drbg_random, &r.drbg)) {
		seterr(err, errlen, "%s", "key generation failed");
		goto out;
	}
	if (mbedtls_pk_write_key_pem(&pk, pem, sizeof(pem))) {
		seterr(err, errlen, "%s", "key encoding failed");
		goto out;
	}
	rc = write_new(kpath, pem, strlen((char *)pem), 0600);
	if (rc) {
		seterr(err, errlen, "%s: cannot create", kpath);
		goto out;
	}
	rc = HUB_ERR_TLS;
	if (mbedtls_pk_write_pubkey_pem(&pk, pem, sizeof(pem))) {
		seterr(err, errlen, "%s", "key encoding failed");
		unlink(kpath);
		goto out;
	}
	rc = write_new(ppath, pem, strlen((char *)pem), 0644);
	if (rc) {
		seterr(err, errlen, "%s: cannot create", ppath);
		unlink(kpath);
	}
out:
	mbedtls_platform_zeroize(pem, sizeof(pem));
	mbedtls_pk_free(&pk);
	rng_free(&r);
	return rc;
}

int
fleet_token_sign(const char *keyfile, const struct fleet_claims *c, char *out,
		 size_t cap, char *err, size_t errlen)
{
	static const char hdr[] = "{\"alg\":\"ES256\",\"typ\":\"JWT\"}";
	char claims[1024];
	uint8_t hash[32], der[MBEDTLS_ECDSA_MAX_LEN], rs[FLEET_SIG_LEN];
	size_t n, clen, dlen, off;
	mbedtls_pk_context pk;
	struct rng r;
	int rc = HUB_ERR_TLS;

	if (out && cap)
		out[0] = '\0';
	mbedtls_pk_init(&pk);
	if (rng_init(&r)) {
		seterr(err, errlen, "%s", "random generator failed");
		goto out;
	}
	if (mbedtls_pk_parse_keyfile(&pk, keyfile, NULL,
				     mbedtls_ctr_drbg_random, &r.drbg) ||
	    !is_p256(&pk)) {
		seterr(err, errlen, "%s: not an EC P-256 private key", keyfile);
		rc = HUB_ERR_IO;
		goto out;
	}
	rc = fleet_claims_json(c, claims, sizeof(claims), &clen);
	if (rc) {
		seterr(err, errlen, "%s", "bad claims");
		goto out;
	}
	rc = HUB_ERR_TOOBIG;
	if (fleet_b64url_encode((const uint8_t *)hdr, sizeof(hdr) - 1, out, cap,
				&off) ||
	    off + 1 >= cap)
		goto out;
	out[off++] = '.';
	if (fleet_b64url_encode((const uint8_t *)claims, clen, out + off,
				cap - off, &n) ||
	    off + n + 1 >= cap)
		goto out;
	off += n;
	rc = HUB_ERR_TLS;
	if (mbedtls_sha256((const unsigned char *)out, off, hash, 0) ||
	    mbedtls_pk_sign(&pk, MBEDTLS_MD_SHA256, hash, sizeof(hash), der,
			    sizeof(der), &dlen, mbedtls_ctr_drbg_random,
			    &r.drbg) ||
	    fleet_sig_from_der(der, dlen, rs)) {
		seterr(err, errlen, "%s", "signing failed");
		goto out;
	}
	rc = HUB_ERR_TOOBIG;
	out[off++] = '.';
	if (fleet_b64url_encode(rs, sizeof(rs), out + off, cap - off, &n))
		goto out;
	rc = HUB_OK;
out:
	if (rc && out && cap)
		out[0] = '\0';
	mbedtls_pk_free(&pk);
	rng_free(&r);
	return rc;
}
