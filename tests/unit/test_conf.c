/*
 * test_conf.c - hubcore's pure parts: hub/conf.c (defaults, INI, flags),
 * hub/authlimit.c (per hub, shared across fork), hub/pendlimit.c and
 * hub/uplimit.c.
 */
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
#include "pendlimit.h"
#include "uplimit.h"

#include <sys/wait.h>

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
	assert_int_equal(c.bridge_window, 1000);
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

/* One table for the whole hub: failures counted in another process (a
 * worker) block the address here too. */
static void
authlimit_shared_across_fork(void **state)
{
	struct authlimit *a = authlimit_new(64, 3);
	int status;
	pid_t pid;

	(void)state;
	assert_non_null(a);
	assert_int_equal(authlimit_fail(a, "10.0.0.1", 1000), 1); /* first */
	assert_int_equal(authlimit_fail(a, "10.0.0.1", 1000), 0);
	pid = fork();
	if (pid == 0)
		_exit(authlimit_fail(a, "10.0.0.1", 2000) == 0 ? 0 : 1);
	assert_true(pid > 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(authlimit_blocked(a, "10.0.0.1", 3000), 58);
	/* a new minute: a new first failure */
	assert_int_equal(authlimit_fail(a, "10.0.0.1", 62000), 1);
	authlimit_free(a);
	authlimit_free(NULL);
}

static void
pendlimit_caps_per_address(void **state)
{
	struct pendlimit *p = pendlimit_new(64, 2);
	struct pendlimit_slot *s1, *s2, *s3;
	int refuse, i;

	(void)state;
	assert_non_null(p);
	s1 = pendlimit_enter(p, "10.0.0.1", &refuse);
	assert_non_null(s1);
	s2 = pendlimit_enter(p, "10.0.0.1", &refuse);
	assert_non_null(s2);
	assert_null(pendlimit_enter(p, "10.0.0.1", &refuse));
	assert_int_equal(refuse, 1);
	s3 = pendlimit_enter(p, "10.0.0.2", &refuse); /* others unaffected */
	assert_non_null(s3);
	assert_int_equal(pendlimit_count(p, "10.0.0.1"), 2);
	pendlimit_leave(s1);
	assert_non_null(s1 = pendlimit_enter(p, "10.0.0.1", &refuse));
	pendlimit_leave(s1);
	pendlimit_leave(s2);
	pendlimit_leave(s3);
	pendlimit_leave(NULL);
	assert_int_equal(pendlimit_count(p, "10.0.0.1"), 0);
	/* a flood of addresses: bounded, let through uncounted, no refusal */
	for (i = 0; i < 10000; i++) {
		char addr[32];

		snprintf(addr, sizeof(addr), "10.1.%d.%d", i >> 8, i & 255);
		pendlimit_enter(p, addr, &refuse);
		assert_int_equal(refuse, 0);
	}
	pendlimit_free(p);
}

static void
uplimit_frames_and_bytes(void **state)
{
	struct uplimit_conf c = {5, 1000, 2048};
	struct uplimit u;
	int i, ok = 0;

	(void)state;
	uplimit_init(&u, &c, 0);
	/* a burst of 5 pings, then nothing until tokens come back */
	for (i = 0; i < 10; i++)
		ok += uplimit_charge(&u, &c, 10, 0);
	assert_int_equal(ok, 5);
	assert_false(uplimit_charge(&u, &c, 10, 100));
	assert_true(uplimit_charge(&u, &c, 10, 200)); /* 5/s: one per 200 ms */
	/* bytes: burst 2048, then 1000 per second */
	uplimit_init(&u, &c, 0);
	assert_true(uplimit_charge(&u, &c, 2000, 0));
	assert_false(uplimit_charge(&u, &c, 1000, 0));
	assert_false(uplimit_charge(&u, &c, 1000, 900));
	assert_true(uplimit_charge(&u, &c, 1000, 1000));
	/* a refused message spends nothing */
	uplimit_init(&u, &c, 0);
	assert_false(uplimit_charge(&u, &c, 4096, 0));
	assert_true(uplimit_charge(&u, &c, 2048, 0));
	/* the monotonic clock wraps */
	uplimit_init(&u, &c, UINT32_MAX - 10);
	for (i = 0; i < 5; i++)
		assert_true(uplimit_charge(&u, &c, 1, UINT32_MAX - 10));
	assert_true(uplimit_charge(&u, &c, 1, 400));
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
	    cmocka_unit_test(authlimit_shared_across_fork),
	    cmocka_unit_test(pendlimit_caps_per_address),
	    cmocka_unit_test(uplimit_frames_and_bytes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
