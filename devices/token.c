/*
 * token.c - device tokens: generation, salted hashing, verification.
 *
 * A token is 32 bytes from mbedTLS CTR_DRBG (seeded from mbedtls_entropy,
 * i.e. getrandom/urandom), printed as 43 chars of base64url without
 * padding. Only "v1$<salt hex 32>$<sha256(salt || token) hex 64>" is ever
 * stored; verification compares full digests with mbedtls_ct_memcmp.
 * SHA-256 (not a slow KDF) is right here: tokens carry 256 bits of entropy,
 * so there is nothing to brute-force, and checks must be cheap under a
 * reconnect storm.
 *
 * Threads: the DRBG is process-wide, behind a mutex, so any thread may call
 * these. hubd forks its workers: a child inheriting the DRBG state would
 * repeat its parent's (and siblings') output, so the DRBG is reseeded from
 * fresh entropy whenever getpid() changed since the last draw.
 */
#include "registry_int.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <mbedtls/base64.h>
#include <mbedtls/constant_time.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>

#define TOKEN_BYTES 32

static pthread_mutex_t rng_lock = PTHREAD_MUTEX_INITIALIZER;
static mbedtls_entropy_context rng_entropy;
static mbedtls_ctr_drbg_context rng_drbg;
static int rng_ready;
static pid_t rng_pid;

int
registry__random(unsigned char *buf, size_t len)
{
	static const char pers[] = "hub registry tokens";
	pid_t pid = getpid();
	int err = HUB_OK;

	pthread_mutex_lock(&rng_lock);
	if (!rng_ready) {
		mbedtls_entropy_init(&rng_entropy);
		mbedtls_ctr_drbg_init(&rng_drbg);
		if (mbedtls_ctr_drbg_seed(
			&rng_drbg, mbedtls_entropy_func, &rng_entropy,
			(const unsigned char *)pers, sizeof(pers) - 1)) {
			mbedtls_ctr_drbg_free(&rng_drbg);
			mbedtls_entropy_free(&rng_entropy);
			err = HUB_ERR_TLS;
			goto out;
		}
		rng_ready = 1;
		rng_pid = pid;
	} else if (rng_pid != pid) {
		if (mbedtls_ctr_drbg_reseed(
			&rng_drbg, (const unsigned char *)&pid, sizeof(pid))) {
			err = HUB_ERR_TLS;
			goto out;
		}
		rng_pid = pid;
	}
	while (len) {
		size_t n = len > MBEDTLS_CTR_DRBG_MAX_REQUEST
			       ? MBEDTLS_CTR_DRBG_MAX_REQUEST
			       : len;

		if (mbedtls_ctr_drbg_random(&rng_drbg, buf, n)) {
			err = HUB_ERR_TLS;
			goto out;
		}
		buf += n;
		len -= n;
	}
out:
	pthread_mutex_unlock(&rng_lock);
	return err;
}

int
registry__digest(const unsigned char *salt, const char *token, size_t len,
		 unsigned char *digest)
{
	mbedtls_sha256_context ctx;
	int err = HUB_ERR_TLS;

	mbedtls_sha256_init(&ctx);
	if (mbedtls_sha256_starts(&ctx, 0))
		goto out;
	if (mbedtls_sha256_update(&ctx, salt, REGISTRY__SALT_LEN))
		goto out;
	if (len &&
	    mbedtls_sha256_update(&ctx, (const unsigned char *)token, len))
		goto out;
	if (mbedtls_sha256_finish(&ctx, digest))
		goto out;
	err = HUB_OK;
out:
	mbedtls_sha256_free(&ctx);
	return err;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int
unhex(const char *s, unsigned char *out, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return HUB_ERR_INVAL;
		out[i] = (unsigned char)(hi << 4 | lo);
	}
	return HUB_OK;
}

static void
tohex(const unsigned char *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
}

int
registry__hash_parse(const char *stored, size_t len, unsigned char *salt,
		     unsigned char *digest)
{
	const size_t salt_at = 3, dig_at = 3 + 2 * REGISTRY__SALT_LEN + 1;

	if (!stored || len != REGISTRY__HASH_STR_LEN ||
	    memcmp(stored, "v1$", 3) != 0 || stored[dig_at - 1] != '$')
		return HUB_ERR_INVAL;
	if (unhex(stored + salt_at, salt, REGISTRY__SALT_LEN) != HUB_OK ||
	    unhex(stored + dig_at, digest, REGISTRY__DIGEST_LEN) != HUB_OK)
		return HUB_ERR_INVAL;
	return HUB_OK;
}

int
registry_token_new(char *out)
{
	unsigned char raw[TOKEN_BYTES];
	unsigned char b64[48]; /* 44 chars + NUL */
	size_t olen = 0, i;
	int err;

	if (!out)
		return HUB_ERR_INVAL;
	out[0] = '\0';
	err = registry__random(raw, sizeof(raw));
	if (err != HUB_OK)
		goto out;
	if (mbedtls_base64_encode(b64, sizeof(b64), &olen, raw, sizeof(raw)) ||
	    olen < REGISTRY_TOKEN_LEN) {
		err = HUB_ERR_TLS;
		goto out;
	}
	/* base64 -> base64url, padding dropped */
	for (i = 0; i < REGISTRY_TOKEN_LEN; i++) {
		unsigned char c = b64[i];

		out[i] = c == '+' ? '-' : c == '/' ? '_' : (char)c;
	}
	out[REGISTRY_TOKEN_LEN] = '\0';
out:
	mbedtls_platform_zeroize(raw, sizeof(raw));
	mbedtls_platform_zeroize(b64, sizeof(b64));
	return err;
}

int
registry_token_hash(const char *token, size_t len, char *out, size_t outlen)
{
	unsigned char salt[REGISTRY__SALT_LEN], digest[REGISTRY__DIGEST_LEN];
	char *p;
	int err;

	if (!token || !out || outlen < REGISTRY__HASH_STR_LEN + 1)
		return HUB_ERR_INVAL;
	out[0] = '\0';
	err = registry__random(salt, sizeof(salt));
	if (err != HUB_OK)
		goto out;
	err = registry__digest(salt, token, len, digest);
	if (err != HUB_OK)
		goto out;
	p = out;
	memcpy(p, "v1$", 3);
	p += 3;
	tohex(salt, sizeof(salt), p);
	p += 2 * sizeof(salt);
	*p++ = '$';
	tohex(digest, sizeof(digest), p);
	p += 2 * sizeof(digest);
	*p = '\0';
out:
	mbedtls_platform_zeroize(digest, sizeof(digest));
	return err;
}

int
registry_token_verify(const char *stored, const char *token, size_t len)
{
	unsigned char salt[REGISTRY__SALT_LEN], want[REGISTRY__DIGEST_LEN];
	unsigned char got[REGISTRY__DIGEST_LEN];
	int ok = 0;

	if (!stored || !token)
		return 0;
	if (registry__hash_parse(stored,
				 strnlen(stored, REGISTRY__HASH_STR_LEN + 1),
				 salt, want) != HUB_OK)
		goto out;
	if (registry__digest(salt, token, len, got) != HUB_OK)
		goto out;
	ok = mbedtls_ct_memcmp(got, want, sizeof(got)) == 0;
out:
	mbedtls_platform_zeroize(got, sizeof(got));
	return ok;
}
