/* test_conf.c - hub/conf.c (defaults, INI, flags) and hub/authlimit.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "authlimit.h"
#include "conf.h"
#include "hub_err.h"

static int
load(struct conf *c, int argc, char **argv)
{
	char err[256];

	return conf_load(c, argc, argv, err, sizeof(err));
}

static void
defaults_match_design(void **state)
{
	char *argv[] = {"hubd", "--no-tls"};
	struct conf c;

	(void)state;
	assert_int_equal(load(&c, 2, argv), HUB_OK);
	assert_string_equal(c.listen_host, "0.0.0.0");
	assert_int_equal(c.listen_port, 8443);
	assert_string_equal(c.db, "var/registry.db");
	assert_string_equal(c.broker, "tcp://127.0.0.1:1883");
	assert_int_equal(c.mqtt_version, 5);
	assert_int_equal(c.max_conns, 100000);
	assert_string_equal(c.prefix, "devices");
	assert_string_equal(c.http_host, "127.0.0.1");
	assert_int_equal(c.http_port, 9100);
	assert_int_equal(c.heartbeat, 30);
	assert_int_equal(c.idle_timeout, 75);
	assert_int_equal(c.max_frame, 65536);
	assert_int_equal(c.rate, 1000);
	assert_int_equal(c.inflight, 256);
	assert_int_equal(c.auth_fail_limit, 20);
	assert_int_equal(c.drain, 10);
}

static void
file_then_flags(void **state)
{
	char path[] = "/tmp/hubconfXXXXXX";
	int fd = mkstemp(path);
	FILE *f = fdopen(fd, "w");
	struct conf c;
	char cfg[64];

	(void)state;
	fprintf(f, "; comment\nno-tls = true\nlisten = 127.0.0.1:9443\n"
		   "rate = 5\nprefix = site1/devices\n");
	fclose(f);
	snprintf(cfg, sizeof(cfg), "--config=%s", path);
	{
		char *argv[] = {"hubd", "--rate", "7", cfg,
				"--http=[::1]:9200"};
		assert_int_equal(load(&c, 5, argv), HUB_OK);
	}
	assert_int_equal(c.no_tls, 1);
	assert_string_equal(c.listen_host, "127.0.0.1");
	assert_int_equal(c.listen_port, 9443);
	assert_int_equal(c.rate, 7); /* the flag wins, wherever it stands */
	assert_string_equal(c.prefix, "site1/devices");
	assert_string_equal(c.http_host, "::1");
	assert_int_equal(c.http_port, 9200);
	unlink(path);
}

static void
bad_input_is_refused(void **state)
{
	char *a1[] = {"hubd"}; /* no TLS files */
	char *a2[] = {"hubd", "--no-tls", "--rate", "0"};
	char *a3[] = {"hubd", "--no-tls", "--bogus"};
	char *a4[] = {"hubd", "--no-tls", "--listen", "nohost"};
	char *a5[] = {"hubd", "--no-tls", "--heartbeat", "80"};
	char *a6[] = {"hubd", "--no-tls", "--mqtt-version", "4"};
	char *a7[] = {"hubd", "--no-tls", "--hub-id", "a/b"};
	char *a8[] = {"hubd", "--no-tls", "--max-frame"};
	char *a9[] = {"hubd", "--help"};
	/* device "sessions" would publish into hub/sessions/... */
	char *a10[] = {"hubd", "--no-tls", "--prefix", "hub"};
	char *a11[] = {"hubd", "--no-tls", "--prefix", "fleet"};
	struct conf c;

	(void)state;
	assert_int_equal(load(&c, 1, a1), HUB_ERR_INVAL);
	assert_int_equal(load(&c, 4, a2), HUB_ERR_INVAL);
	assert_int_equal(load(&c, 3, a3), HUB_ERR_INVAL);
	assert_int_equal(load(&c, 4, a4), HUB_ERR_INVAL);
	assert_int_equal(load(&c, 4, a5), HUB_ERR_INVAL);
	assert_int_equal(load(&c, 4, a6), HUB_ERR_INVAL);
	assert_int_equal(load(&c, 4, a7), HUB_ERR_INVAL);
	assert_int_equal(load(&c, 3, a8), HUB_ERR_INVAL);
	assert_int_equal(load(&c, 2, a9), HUB_ERR_EXISTS);
	assert_int_equal(load(&c, 4, a10), HUB_ERR_INVAL);
	assert_int_equal(load(&c, 4, a11), HUB_ERR_INVAL);
}

static void
worker_count(void **state)
{
	char *argv[] = {"hubd", "--no-tls"};
	struct conf c;

	(void)state;
	load(&c, 2, argv);
	/* 100k devices at 20000 fds: 18000 a worker -> 6 */
	assert_int_equal(conf_workers(&c, 20000, 2), 6);
	c.max_conns = 100;
	assert_int_equal(conf_workers(&c, 20000, 2),
			 2); /* at least the cores */
	c.workers = 3;
	assert_int_equal(conf_workers(&c, 20000, 2), 3);
}

static void
authlimit_window(void **state)
{
	struct authlimit *a = authlimit_new(64, 3);
	int i;

	(void)state;
	assert_non_null(a);
	for (i = 0; i < 3; i++) {
		assert_int_equal(authlimit_blocked(a, "127.0.0.9", 1000), 0);
		authlimit_fail(a, "127.0.0.9", 1000);
	}
	assert_int_equal(authlimit_blocked(a, "127.0.0.9", 1000), 60);
	assert_int_equal(authlimit_blocked(a, "127.0.0.9", 31000), 30);
	assert_int_equal(authlimit_blocked(a, "127.0.0.8", 31000), 0);
	assert_int_equal(authlimit_blocked(a, "127.0.0.9", 61000), 0);
	/* a flood of addresses reuses the table: no growth, still works */
	for (i = 0; i < 100000; i++) {
		char addr[32];
		snprintf(addr, sizeof(addr), "10.%d.%d.%d", i >> 16,
			 (i >> 8) & 255, i & 255);
		authlimit_fail(a, addr, 70000);
	}
	for (i = 0; i < 3; i++)
		authlimit_fail(a, "127.0.0.7", 70000);
	assert_true(authlimit_blocked(a, "127.0.0.7", 70000) > 0);
	authlimit_free(a);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(defaults_match_design),
	    cmocka_unit_test(file_then_flags),
	    cmocka_unit_test(bad_input_is_refused),
	    cmocka_unit_test(worker_count),
	    cmocka_unit_test(authlimit_window),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
