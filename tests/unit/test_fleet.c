/*
 * test_fleet.c - signed fleet tokens (fleet/): base64url, r||s <-> DER,
 * header and claims rules, every rejection case, and keys with mbedTLS
 * (generation, 0600, signing, verification, rotation, forgeries).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "fleet.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NOW 1800000000LL

/* A token from header and claims JSON text and a signature. */
static void
make(char *out, size_t cap, const char *hdr, const char *claims,
     const uint8_t *sig, size_t siglen)
{
	size_t n, off;

	assert_int_equal(fleet_b64url_encode((const uint8_t *)hdr, strlen(hdr),
					     out, cap, &off),
			 HUB_OK);
	out[off++] = '.';
	assert_int_equal(fleet_b64url_encode((const uint8_t *)claims,
					     strlen(claims), out + off,
					     cap - off, &n),
			 HUB_OK);
	off += n;
	out[off++] = '.';
	assert_int_equal(
	    fleet_b64url_encode(sig, siglen, out + off, cap - off, &n), HUB_OK);
}

static const char good_hdr[] = "{\"alg\":\"ES256\",\"typ\":\"JWT\"}";
static const char good_claims[] =
    "{\"sub\":\"dev-1\",\"iat\":1800000000,\"exp\":1800003600,"
    "\"jti\":\"ab12\",\"groups\":[\"north\",\"pumps\"]}";
static const uint8_t zsig[64];

static void
test_b64url(void **st)
{
	static const struct {
		const char *raw, *enc;
	} v[] = {{"", ""},	     {"f", "Zg"},	 {"fo", "Zm8"},
		 {"foo", "Zm9v"},    {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"},
		 {"\xfb\xff", "-_8"}};
	char enc[32];
	uint8_t dec[32];
	size_t i, n;

	(void)st;
	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		assert_int_equal(fleet_b64url_encode((const uint8_t *)v[i].raw,
						     strlen(v[i].raw), enc,
						     sizeof(enc), &n),
				 HUB_OK);
		assert_string_equal(enc, v[i].enc);
		assert_int_equal(fleet_b64url_decode(v[i].enc, strlen(v[i].enc),
						     dec, sizeof(dec), &n),
				 HUB_OK);
		assert_int_equal(n, strlen(v[i].raw));
		assert_memory_equal(dec, v[i].raw, n);
	}
	/* padding, standard alphabet, length 1 mod 4, non-zero pad bits */
	assert_int_equal(fleet_b64url_decode("Zg==", 4, dec, 32, &n),
			 HUB_ERR_INVAL);
	assert_int_equal(fleet_b64url_decode("+/8", 3, dec, 32, &n),
			 HUB_ERR_INVAL);
	assert_int_equal(fleet_b64url_decode("Zm9vY", 5, dec, 32, &n),
			 HUB_ERR_INVAL);
	assert_int_equal(fleet_b64url_decode("Zh", 2, dec, 32, &n),
			 HUB_ERR_INVAL);
	assert_int_equal(fleet_b64url_decode("Zm9v", 4, dec, 2, &n),
			 HUB_ERR_TOOBIG);
	assert_int_equal(
	    fleet_b64url_encode((const uint8_t *)"foo", 3, enc, 4, &n),
	    HUB_ERR_TOOBIG);
}

static void
test_der(void **st)
{
	uint8_t rs[64], back[64], der[80];
	size_t n;
	int i;

	(void)st;
	/* high bit set: a 0x00 pad byte; leading zeros: stripped */
	for (i = 0; i < 64; i++)
		rs[i] = (uint8_t)(0x80 + i);
	memset(rs + 32, 0, 5);
	rs[37] = 0x01;
	assert_int_equal(fleet_sig_to_der(rs, der, sizeof(der), &n), HUB_OK);
	assert_int_equal(der[0], 0x30);
	assert_int_equal(der[2], 0x02);
	assert_int_equal(der[3], 33); /* r padded */
	assert_int_equal(der[4], 0x00);
	assert_int_equal(der[37], 0x02);
	assert_int_equal(der[38], 27); /* s without its 5 zero bytes */
	assert_int_equal(n, 2 + 35 + 29);
	assert_int_equal(fleet_sig_from_der(der, n, back), HUB_OK);
	assert_memory_equal(back, rs, 64);
	assert_int_equal(fleet_sig_to_der(rs, der, 10, &n), HUB_ERR_TOOBIG);

	/* rejections: not minimal, negative, trailing, wrong lengths */
	{
		static const uint8_t nonmin[] = {0x30, 0x07, 0x02, 0x02, 0x00,
						 0x01, 0x02, 0x01, 0x01};
		static const uint8_t neg[] = {0x30, 0x06, 0x02, 0x01,
					      0x81, 0x02, 0x01, 0x01};
		static const uint8_t trail[] = {0x30, 0x07, 0x02, 0x01, 0x01,
						0x02, 0x01, 0x01, 0x00};
		static const uint8_t badlen[] = {0x30, 0x09, 0x02, 0x01,
						 0x01, 0x02, 0x01, 0x01};
		static const uint8_t zero[] = {0x30, 0x06, 0x02, 0x01,
					       0x00, 0x02, 0x01, 0x01};
		static const uint8_t ok[] = {0x30, 0x06, 0x02, 0x01,
					     0x01, 0x02, 0x01, 0x02};
		uint8_t big[72];

		assert_int_equal(
		    fleet_sig_from_der(nonmin, sizeof(nonmin), back),
		    HUB_ERR_INVAL);
		assert_int_equal(fleet_sig_from_der(neg, sizeof(neg), back),
				 HUB_ERR_INVAL);
		assert_int_equal(fleet_sig_from_der(trail, sizeof(trail), back),
				 HUB_ERR_INVAL);
		assert_int_equal(
		    fleet_sig_from_der(badlen, sizeof(badlen), back),
		    HUB_ERR_INVAL);
		assert_int_equal(fleet_sig_from_der(zero, sizeof(zero), back),
				 HUB_ERR_INVAL);
		assert_int_equal(fleet_sig_from_der(ok, sizeof(ok), back),
				 HUB_OK);
		assert_int_equal(back[31], 1);
		assert_int_equal(back[63], 2);
		/* a 34-byte integer does not fit P-256 */
		memset(big, 0x11, sizeof(big));
		big[0] = 0x30;
		big[1] = 70;
		big[2] = 0x02;
		big[3] = 34;
		big[38] = 0x02;
		big[39] = 32;
		assert_int_equal(fleet_sig_from_der(big, sizeof(big), back),
				 HUB_ERR_INVAL);
	}
}

static void
test_parse_good(void **st)
{
	char tok[1100];
	struct fleet_jwt j;

	(void)st;
	make(tok, sizeof(tok), good_hdr, good_claims, zsig, 64);
	assert_true(fleet_jwt_shape(tok, strlen(tok)));
	assert_int_equal(fleet_jwt_parse(tok, strlen(tok), &j), HUB_OK);
	assert_string_equal(j.claims.sub, "dev-1");
	assert_int_equal(j.claims.iat, NOW);
	assert_int_equal(j.claims.exp, NOW + 3600);
	assert_string_equal(j.claims.jti, "ab12");
	assert_int_equal(j.claims.ngroups, 2);
	assert_string_equal(j.claims.groups[1], "pumps");
	assert_int_equal(j.signed_len, (size_t)(strrchr(tok, '.') - tok));
	/* typ is optional */
	make(tok, sizeof(tok), "{\"alg\":\"ES256\"}", good_claims, zsig, 64);
	assert_int_equal(fleet_jwt_parse(tok, strlen(tok), &j), HUB_OK);
	/* an opaque token is not shaped like a JWT */
	assert_false(
	    fleet_jwt_shape("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", 43));
}

static void
test_parse_rejects(void **st)
{
	static const char *hdrs[] = {
	    "{\"alg\":\"none\"}",
	    "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
	    "{\"alg\":\"RS256\"}",
	    "{\"alg\":\"es256\"}",
	    "{\"typ\":\"JWT\"}",
	    "{\"alg\":\"ES256\",\"typ\":\"JWE\"}",
	    "{\"alg\":\"ES256\",\"crit\":[\"exp\"]}",
	    "{\"alg\":\"ES256\",\"alg\":\"none\"}",
	    "{\"alg\":\"none\",\"alg\":\"ES256\"}",
	    "[\"alg\",\"ES256\"]",
	    "{\"alg\":\"ES256\"",
	    "",
	};
	static const char *claims[] = {
	    "{\"iat\":1800000000,\"exp\":1800003600}",
	    "{\"sub\":\"a/b\",\"iat\":1800000000,\"exp\":1800003600}",
	    "{\"sub\":\"\",\"iat\":1800000000,\"exp\":1800003600}",
	    "{\"sub\":7,\"iat\":1800000000,\"exp\":1800003600}",
	    "{\"sub\":\"d\",\"iat\":1800000000}",
	    "{\"sub\":\"d\",\"exp\":1800003600}",
	    "{\"sub\":\"d\",\"iat\":1800000000,\"exp\":\"1800003600\"}",
	    "{\"sub\":\"d\",\"iat\":1800000000,\"exp\":1800003600.5}",
	    "{\"sub\":\"d\",\"iat\":1800000000,\"exp\":-1}",
	    "{\"sub\":\"d\",\"iat\":1800000000,\"exp\":1e300}",
	    "{\"sub\":\"d\",\"iat\":1800000000,\"exp\":1800003600,"
	    "\"nbf\":\"x\"}",
	    "{\"sub\":\"d\",\"sub\":\"e\",\"iat\":1800000000,"
	    "\"exp\":1800003600}",
	    "{\"sub\":\"d\",\"iat\":1800000000,\"exp\":1800003600,"
	    "\"groups\":\"g\"}",
	    "{\"sub\":\"d\",\"iat\":1800000000,\"exp\":1800003600,"
	    "\"groups\":[\"a b\"]}",
	    "{\"sub\":\"d\",\"iat\":1800000000,\"exp\":1800003600,"
	    "\"groups\":[1]}",
	    "{\"sub\":\"d\",\"iat\":1800000000,\"exp\":1800003600,"
	    "\"groups\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\","
	    "\"10\",\"11\",\"12\",\"13\",\"14\",\"15\",\"16\",\"17\"]}",
	    "{\"sub\":\"d\",\"iat\":1800000000,\"exp\":1800003600,"
	    "\"jti\":5}",
	    "\"just a string\"",
	};
	char tok[1400];
	struct fleet_jwt j;
	size_t i;

	(void)st;
	for (i = 0; i < sizeof(hdrs) / sizeof(hdrs[0]); i++) {
		if (!hdrs[i][0]) {
			snprintf(tok, sizeof(tok), ".e30.AAAA");
		} else {
			make(tok, sizeof(tok), hdrs[i], good_claims, zsig, 64);
		}
		assert_int_not_equal(fleet_jwt_parse(tok, strlen(tok), &j),
				     HUB_OK);
	}
	for (i = 0; i < sizeof(claims) / sizeof(claims[0]); i++) {
		make(tok, sizeof(tok), good_hdr, claims[i], zsig, 64);
		assert_int_not_equal(fleet_jwt_parse(tok, strlen(tok), &j),
				     HUB_OK);
	}
	/* signature: empty ("alg none" style), short, long */
	make(tok, sizeof(tok), good_hdr, good_claims, zsig, 0);
	assert_int_not_equal(fleet_jwt_parse(tok, strlen(tok), &j), HUB_OK);
	make(tok, sizeof(tok), good_hdr, good_claims, zsig, 63);
	assert_int_not_equal(fleet_jwt_parse(tok, strlen(tok), &j), HUB_OK);
	{
		uint8_t s65[65] = {0};

		make(tok, sizeof(tok), good_hdr, good_claims, s65, 65);
		assert_int_not_equal(fleet_jwt_parse(tok, strlen(tok), &j),
				     HUB_OK);
	}
	/* shape: two parts, four parts, padding, spaces, too long */
	assert_int_not_equal(fleet_jwt_parse("a.b", 3, &j), HUB_OK);
	make(tok, sizeof(tok), good_hdr, good_claims, zsig, 64);
	strncat(tok, ".AAAA", sizeof(tok) - strlen(tok) - 1);
	assert_int_not_equal(fleet_jwt_parse(tok, strlen(tok), &j), HUB_OK);
	make(tok, sizeof(tok), good_hdr, good_claims, zsig, 64);
	strncat(tok, "=", sizeof(tok) - strlen(tok) - 1);
	assert_int_not_equal(fleet_jwt_parse(tok, strlen(tok), &j), HUB_OK);
	memset(tok, 'A', sizeof(tok));
	tok[10] = '.';
	tok[20] = '.';
	assert_int_equal(fleet_jwt_parse(tok, FLEET_TOKEN_MAX + 1, &j),
			 HUB_ERR_TOOBIG);
}

static void
test_claims_check(void **st)
{
	struct fleet_claims c;

	(void)st;
	memset(&c, 0, sizeof(c));
	snprintf(c.sub, sizeof(c.sub), "dev-1");
	c.iat = NOW;
	c.exp = NOW + 3600;
	assert_int_equal(fleet_claims_check(&c, "dev-1", NOW, 60), HUB_OK);
	/* sub compared exactly */
	assert_int_equal(fleet_claims_check(&c, "dev-10", NOW, 60),
			 HUB_ERR_AUTH);
	assert_int_equal(fleet_claims_check(&c, "dev-", NOW, 60), HUB_ERR_AUTH);
	assert_int_equal(fleet_claims_check(&c, "DEV-1", NOW, 60),
			 HUB_ERR_AUTH);
	/* exp with leeway */
	assert_int_equal(fleet_claims_check(&c, "dev-1", NOW + 3600 + 59, 60),
			 HUB_OK);
	assert_int_equal(fleet_claims_check(&c, "dev-1", NOW + 3600 + 60, 60),
			 HUB_ERR_AUTH);
	/* nbf and iat in the future, beyond the leeway */
	c.nbf = NOW + 120;
	assert_int_equal(fleet_claims_check(&c, "dev-1", NOW, 60),
			 HUB_ERR_AUTH);
	assert_int_equal(fleet_claims_check(&c, "dev-1", NOW + 61, 60), HUB_OK);
	c.nbf = 0;
	c.iat = NOW + 61;
	assert_int_equal(fleet_claims_check(&c, "dev-1", NOW, 60),
			 HUB_ERR_AUTH);
}

static char tmpdir[64];

static void
keydir(const char *sub, char *out, size_t cap)
{
	snprintf(out, cap, "%s/%s", tmpdir, sub);
	assert_int_equal(mkdir(out, 0700), 0);
}

static void
test_keys(void **st)
{
	char a[100], b[100], path[300], list[400], tok[1100], err[128];
	struct fleet_keys *ka = NULL, *kb = NULL, *kab = NULL;
	struct fleet_claims c, got;
	struct stat s;

	(void)st;
	keydir("a", a, sizeof(a));
	keydir("b", b, sizeof(b));
	assert_int_equal(fleet_keygen(a, err, sizeof(err)), HUB_OK);
	assert_int_equal(fleet_keygen(b, err, sizeof(err)), HUB_OK);
	assert_int_equal(fleet_keygen(a, err, sizeof(err)), HUB_ERR_EXISTS);
	snprintf(path, sizeof(path), "%s/fleet.key", a);
	assert_int_equal(stat(path, &s), 0);
	assert_int_equal(s.st_mode & 0777, 0600);

	/* the private key is not a --token-key; nor is a missing file */
	assert_int_not_equal(fleet_keys_load(path, &ka, err, sizeof(err)),
			     HUB_OK);
	assert_null(ka);
	snprintf(list, sizeof(list), "%s/nope.pub", a);
	assert_int_not_equal(fleet_keys_load(list, &ka, err, sizeof(err)),
			     HUB_OK);
	snprintf(list, sizeof(list), "%s/fleet.pub,%s/fleet.pub,%s/fleet.pub",
		 a, b, a);
	assert_int_not_equal(fleet_keys_load(list, &ka, err, sizeof(err)),
			     HUB_OK);

	snprintf(list, sizeof(list), "%s/fleet.pub", a);
	assert_int_equal(fleet_keys_load(list, &ka, err, sizeof(err)), HUB_OK);
	snprintf(list, sizeof(list), "%s/fleet.pub", b);
	assert_int_equal(fleet_keys_load(list, &kb, err, sizeof(err)), HUB_OK);
	snprintf(list, sizeof(list), "%s/fleet.pub,%s/fleet.pub", b, a);
	assert_int_equal(fleet_keys_load(list, &kab, err, sizeof(err)), HUB_OK);

	memset(&c, 0, sizeof(c));
	snprintf(c.sub, sizeof(c.sub), "dev-1");
	c.iat = NOW;
	c.exp = NOW + 86400;
	snprintf(c.jti, sizeof(c.jti), "0123abcd");
	c.ngroups = 1;
	snprintf(c.groups[0], sizeof(c.groups[0]), "north");
	assert_int_equal(
	    fleet_token_sign(path, &c, tok, sizeof(tok), err, sizeof(err)),
	    HUB_OK);
	assert_true(fleet_jwt_shape(tok, strlen(tok)));

	assert_int_equal(
	    fleet_token_verify(ka, "dev-1", tok, strlen(tok), NOW + 5, &got),
	    HUB_OK);
	assert_string_equal(got.groups[0], "north");
	/* rotation: the second key of the list verifies too */
	assert_int_equal(
	    fleet_token_verify(kab, "dev-1", tok, strlen(tok), NOW, NULL),
	    HUB_OK);
	/* another fleet's key, another id, expired */
	assert_int_equal(
	    fleet_token_verify(kb, "dev-1", tok, strlen(tok), NOW, NULL),
	    HUB_ERR_AUTH);
	assert_int_equal(
	    fleet_token_verify(ka, "dev-2", tok, strlen(tok), NOW, NULL),
	    HUB_ERR_AUTH);
	assert_int_equal(fleet_token_verify(ka, "dev-1", tok, strlen(tok),
					    NOW + 86400 + FLEET_LEEWAY_S, NULL),
			 HUB_ERR_AUTH);
	assert_int_equal(
	    fleet_token_verify(NULL, "dev-1", tok, strlen(tok), NOW, NULL),
	    HUB_ERR_AUTH);

	/* tampering: a signature bit, the claims (a longer exp) */
	{
		char t2[1100], *dot;
		size_t n = strlen(tok);

		memcpy(t2, tok, n + 1);
		t2[n - 2] = t2[n - 2] == 'A' ? 'B' : 'A';
		assert_int_equal(
		    fleet_token_verify(ka, "dev-1", t2, n, NOW, NULL),
		    HUB_ERR_AUTH);
		dot = strrchr(tok, '.');
		make(t2, sizeof(t2), good_hdr,
		     "{\"sub\":\"dev-1\",\"iat\":1800000000,"
		     "\"exp\":1900000000}",
		     zsig, 64);
		/* the original signature on other claims */
		memcpy(strrchr(t2, '.'), dot, strlen(dot) + 1);
		assert_int_equal(
		    fleet_token_verify(ka, "dev-1", t2, strlen(t2), NOW, NULL),
		    HUB_ERR_AUTH);
		/* alg none with the real claims and no signature */
		make(t2, sizeof(t2), "{\"alg\":\"none\"}", good_claims, zsig,
		     0);
		assert_int_equal(
		    fleet_token_verify(ka, "dev-1", t2, strlen(t2), NOW, NULL),
		    HUB_ERR_AUTH);
	}
	fleet_keys_free(ka);
	fleet_keys_free(kb);
	fleet_keys_free(kab);
	fleet_keys_free(NULL);
}

static void
test_revoked(void **st)
{
	struct fleet_revoked *r = NULL;
	char reason[16], id[16];
	int64_t before;
	int i, all;

	(void)st;
	assert_int_equal(fleet_revoked_new(&r), HUB_OK);
	assert_int_equal(fleet_revoked_before(r, "d1"), 0);
	assert_int_equal(fleet_revoked_set(r, "d1", 1700000000, 0), HUB_OK);
	assert_int_equal(fleet_revoked_before(r, "d1"), 1700000000);
	assert_int_equal(fleet_revoked_before(r, "d"), 0);
	assert_int_equal(fleet_revoked_set(r, "d1", 1700000100, 0), HUB_OK);
	assert_int_equal(fleet_revoked_before(r, "d1"), 1700000100);
	/* rotated: older tokens void, the one issued at T is not */
	assert_true(fleet_revoked_voids(r, "d1", 1700000099));
	assert_false(fleet_revoked_voids(r, "d1", 1700000100));
	assert_false(fleet_revoked_voids(r, "d2", 1));
	/* disabled or deleted: every token, even one issued later */
	assert_int_equal(fleet_revoked_set(r, "d1", 1700000100, 1), HUB_OK);
	assert_true(fleet_revoked_voids(r, "d1", 1700000200));
	assert_int_equal(fleet_revoked_set(r, "d1", 0, 0), HUB_OK);
	assert_int_equal(fleet_revoked_before(r, "d1"), 0);
	assert_int_equal(fleet_revoked_set(r, "a/b", 5, 0), HUB_ERR_INVAL);
	/* growth keeps every entry */
	for (i = 0; i < 2000; i++) {
		snprintf(id, sizeof(id), "dev%d", i);
		assert_int_equal(fleet_revoked_set(r, id, i + 1, 0), HUB_OK);
	}
	assert_int_equal(fleet_revoked_count(r), 2000);
	for (i = 0; i < 2000; i += 97) {
		snprintf(id, sizeof(id), "dev%d", i);
		assert_int_equal(fleet_revoked_before(r, id), i + 1);
	}
	fleet_revoked_free(r);
	fleet_revoked_free(NULL);

	assert_int_equal(fleet_revocation_parse(
			     "{\"before\":1700000000,\"reason\":\"disabled\"}",
			     41, &before, &all, reason, sizeof(reason)),
			 HUB_OK);
	assert_int_equal(before, 1700000000);
	assert_int_equal(all, 1);
	assert_string_equal(reason, "disabled");
	assert_int_equal(fleet_revocation_parse(
			     "{\"before\":1700000000,\"reason\":\"rotated\"}",
			     40, &before, &all, reason, sizeof(reason)),
			 HUB_OK);
	assert_int_equal(all, 0);
	assert_int_equal(
	    fleet_revocation_parse("", 0, &before, &all, reason, 16), HUB_OK);
	assert_int_equal(before, 0);
	assert_int_not_equal(fleet_revocation_parse("{\"before\":\"x\"}", 14,
						    &before, &all, NULL, 0),
			     HUB_OK);
	assert_int_not_equal(fleet_revocation_parse("{\"before\":-5}", 13,
						    &before, &all, NULL, 0),
			     HUB_OK);
	assert_int_not_equal(
	    fleet_revocation_parse("[1]", 3, &before, &all, NULL, 0), HUB_OK);
	assert_int_not_equal(fleet_revocation_parse("{\"before\":1.5}", 14,
						    &before, &all, NULL, 0),
			     HUB_OK);
}

static int
setup(void **st)
{
	(void)st;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_fleet.XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int
teardown(void **st)
{
	char cmd[128];

	(void)st;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_b64url),
	    cmocka_unit_test(test_der),
	    cmocka_unit_test(test_parse_good),
	    cmocka_unit_test(test_parse_rejects),
	    cmocka_unit_test(test_claims_check),
	    cmocka_unit_test(test_keys),
	    cmocka_unit_test(test_revoked),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
