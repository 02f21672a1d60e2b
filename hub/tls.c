/*
 * tls.c - session-ticket keys shared by every worker and hub; see tls.h.
 *
 * Threads: the worker's service thread only (hub_tls_ticket_key is pure;
 * hub__tls_pair_ok, the certificate and key check, runs on any thread).
 */
#include "tls.h"
#include "hub_err.h"

#include <libwebsockets.h>
#include <mbedtls/md.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/psa_util.h>
#include <mbedtls/ssl_ticket.h>
#include <mbedtls/version.h>
#include <mbedtls/x509_crt.h>
#include <psa/crypto.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#if MBEDTLS_VERSION_NUMBER < 0x03060000 || !defined(MBEDTLS_SSL_TICKET_C)
#error "hubd needs our mbedTLS 3.6 build (tools/build-deps) with tickets"
#endif

#define SECRET_MAX 1024

struct hub_tls {
	mbedtls_ssl_ticket_context ticket;
	uint64_t period; /* of the active key */
	size_t secret_len;
	unsigned char secret[SECRET_MAX];
};

static void
be64(unsigned char *p, uint64_t v)
{
	int i;

	for (i = 7; i >= 0; i--) {
		p[i] = (unsigned char)(v & 0xff);
		v >>= 8;
	}
}

int
hub_tls_ticket_key(const unsigned char *secret, size_t secret_len,
		   uint64_t period, unsigned char key[HUB_TLS_TICKET_KEY_LEN],
		   unsigned char name[HUB_TLS_TICKET_NAME_LEN])
{
	static const char klabel[] = "hub ticket key";
	static const char nlabel[] = "hub ticket name";
	const mbedtls_md_info_t *md =
	    mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
	unsigned char in[sizeof(nlabel) + 8], out[32];
	int rc = HUB_ERR_TLS;

	if (!md || !secret || !secret_len)
		return HUB_ERR_INVAL;
	_Static_assert(HUB_TLS_TICKET_KEY_LEN == 32, "SHA-256 sized key");
	memcpy(in, klabel, sizeof(klabel) - 1);
	be64(in + sizeof(klabel) - 1, period);
	if (mbedtls_md_hmac(md, secret, secret_len, in, sizeof(klabel) - 1 + 8,
			    key))
		goto out;
	memcpy(in, nlabel, sizeof(nlabel) - 1);
	be64(in + sizeof(nlabel) - 1, period);
	if (mbedtls_md_hmac(md, secret, secret_len, in, sizeof(nlabel) - 1 + 8,
			    out))
		goto out;
	memcpy(name, out, HUB_TLS_TICKET_NAME_LEN);
	rc = HUB_OK;
out:
	mbedtls_platform_zeroize(out, sizeof(out));
	return rc;
}

/* makes the key of `period` the active one; the active one becomes the
 * previous (mbedTLS keeps two) */
static int
rotate_to(struct hub_tls *t, uint64_t period)
{
	unsigned char key[HUB_TLS_TICKET_KEY_LEN],
	    name[HUB_TLS_TICKET_NAME_LEN];
	int rc;

	rc = hub_tls_ticket_key(t->secret, t->secret_len, period, key, name);
	if (rc == HUB_OK &&
	    mbedtls_ssl_ticket_rotate(&t->ticket, name, sizeof(name), key,
				      sizeof(key), HUB_TLS_TICKET_LIFETIME))
		rc = HUB_ERR_TLS;
	if (rc == HUB_OK)
		t->period = period;
	mbedtls_platform_zeroize(key, sizeof(key));
	return rc;
}

static uint64_t
period_of(int64_t now)
{
	return now > 0 ? (uint64_t)now / HUB_TLS_TICKET_PERIOD : 0;
}

int
hub_tls_new(const unsigned char *secret, size_t secret_len, int64_t now,
	    struct hub_tls **out)
{
	struct hub_tls *t;
	uint64_t p = period_of(now);
	int rc = HUB_ERR_TLS;

	*out = NULL;
	if (!secret || !secret_len || secret_len > SECRET_MAX)
		return HUB_ERR_INVAL;
	/* the ticket context draws IVs from PSA's DRBG, the same one the TLS
	 * connections use (our lws patch); init is idempotent */
	if (psa_crypto_init() != PSA_SUCCESS)
		return HUB_ERR_TLS;
	t = calloc(1, sizeof(*t));
	if (!t)
		return HUB_ERR_NOMEM;
	memcpy(t->secret, secret, secret_len);
	t->secret_len = secret_len;
	mbedtls_ssl_ticket_init(&t->ticket);
	if (mbedtls_ssl_ticket_setup(
		&t->ticket, mbedtls_psa_get_random, MBEDTLS_PSA_RANDOM_STATE,
		MBEDTLS_CIPHER_AES_256_GCM, HUB_TLS_TICKET_LIFETIME))
		goto fail;
	/* replace setup's random key: previous period's, then this one's */
	if ((p > 0 && rotate_to(t, p - 1) != HUB_OK) ||
	    rotate_to(t, p) != HUB_OK)
		goto fail;
	lws_tls_mbedtls_set_ticket_ctx(&t->ticket);
	*out = t;
	return HUB_OK;
fail:
	mbedtls_ssl_ticket_free(&t->ticket);
	mbedtls_platform_zeroize(t, sizeof(*t));
	free(t);
	return rc;
}

int
hub_tls_tick(struct hub_tls *t, int64_t now)
{
	uint64_t p = period_of(now);

	if (!t || p == t->period)
		return HUB_OK;
	/* a clock step back keeps the newer key rather than reissuing old */
	if (p < t->period)
		return HUB_OK;
	/* after a long stall both keys may be stale: p-1 first, then p */
	if (p > t->period + 1 && rotate_to(t, p - 1) != HUB_OK)
		return HUB_ERR_TLS;
	return rotate_to(t, p);
}

uint64_t
hub_tls_period(const struct hub_tls *t)
{
	return t ? t->period : 0;
}

void
hub_tls_free(struct hub_tls *t)
{
	if (!t)
		return;
	lws_tls_mbedtls_set_ticket_ctx(NULL);
	mbedtls_ssl_ticket_free(&t->ticket);
	mbedtls_platform_zeroize(t, sizeof(*t));
	free(t);
}

/* ---- the certificate and key pair (--tls-cert, --tls-key) ------------- */

#if MBEDTLS_VERSION_MAJOR >= 3
static int
rng(void *arg, unsigned char *buf, size_t n)
{
	(void)arg;
	return getrandom(buf, n, 0) == (ssize_t)n ? 0 : -1;
}
#endif

int
hub__tls_pair_ok(const char *cert, const char *key, char *why, size_t cap)
{
	mbedtls_x509_crt crt;
	mbedtls_pk_context pk;
	int rc;

	mbedtls_x509_crt_init(&crt);
	mbedtls_pk_init(&pk);
	rc = mbedtls_x509_crt_parse_file(&crt, cert);
	if (rc) {
		snprintf(why, cap, "%s: not a PEM certificate (-0x%04x)", cert,
			 (unsigned)-rc);
		goto out;
	}
#if MBEDTLS_VERSION_MAJOR >= 3
	rc = mbedtls_pk_parse_keyfile(&pk, key, NULL, rng, NULL);
#else
	rc = mbedtls_pk_parse_keyfile(&pk, key, NULL);
#endif
	if (rc) {
		snprintf(why, cap, "%s: not a PEM key (-0x%04x)", key,
			 (unsigned)-rc);
		goto out;
	}
#if MBEDTLS_VERSION_MAJOR >= 3
	rc = mbedtls_pk_check_pair(&crt.pk, &pk, rng, NULL);
#else
	rc = mbedtls_pk_check_pair(&crt.pk, &pk);
#endif
	if (rc)
		snprintf(why, cap, "%s does not belong to %s", key, cert);
out:
	mbedtls_pk_free(&pk);
	mbedtls_x509_crt_free(&crt);
	return rc;
}
