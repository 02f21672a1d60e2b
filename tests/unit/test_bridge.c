/*
 * test_bridge.c - the bridge's pure parts: device topic rules, topic
 * mapping both ways, UTF-8 validation, downlink payload classification,
 * broker URI parsing, message allocation. No broker, no threads.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "bridge.h"
#include "bridge_int.h"

#define VALID(s) bridge_topic_valid((s), strlen(s))

static void
test_topic_valid(void **state)
{
	char big[BRIDGE_TOPIC_MAX + 2];

	assert_true(VALID("telemetry"));
	assert_true(VALID("a/b/c"));
	assert_true(VALID("sensors/temp-1/x_y"));
	assert_true(VALID("caf\xc3\xa9/\xe2\x82\xac")); /* café/€ */
	assert_true(VALID("a"));
	assert_true(VALID("$a" + 1));
	assert_true(VALID("a$"));

	assert_false(bridge_topic_valid("", 0));
	assert_false(bridge_topic_valid(NULL, 3));
	assert_false(VALID("/a"));
	assert_false(VALID("a/"));
	assert_false(VALID("a//b"));
	assert_false(VALID("/"));
	assert_false(VALID("$SYS/x"));
	assert_false(VALID("a/+/b"));
	assert_false(VALID("a/#"));
	assert_false(VALID("+"));
	assert_false(VALID("a\tb"));
	assert_false(VALID("a\x7f"));
	assert_false(VALID("a\x1b[0m"));
	assert_false(VALID("a\xc2\x85"
			   "b"));	 /* U+0085 NEL, a C1 control */
	assert_false(VALID("a\xc3"));	 /* truncated UTF-8 */
	assert_false(VALID("\xc0\xaf")); /* overlong '/' */
	assert_false(bridge_topic_valid("a\0b", 3));

	memset(big, 'x', sizeof(big));
	assert_true(bridge_topic_valid(big, BRIDGE_TOPIC_MAX));
	assert_false(bridge_topic_valid(big, BRIDGE_TOPIC_MAX + 1));
}

static void
test_topic_up(void **state)
{
	char out[64];

	assert_int_equal(
	    bridge_topic_up("devices", "d1", "telemetry", out, sizeof(out)),
	    HUB_OK);
	assert_string_equal(out, "devices/d1/telemetry");
	assert_int_equal(
	    bridge_topic_up("a/b", "dev_-9", "x/y", out, sizeof(out)), HUB_OK);
	assert_string_equal(out, "a/b/dev_-9/x/y");
	/* exactly fits: 13 chars + NUL */
	assert_int_equal(bridge_topic_up("devices", "d1", "abc", out, 15),
			 HUB_OK);
	assert_string_equal(out, "devices/d1/abc");
	assert_int_equal(bridge_topic_up("devices", "d1", "abc", out, 14),
			 HUB_ERR_TOOBIG);
	assert_string_equal(out, "");
	assert_int_equal(bridge_topic_up(NULL, "d", "t", out, sizeof(out)),
			 HUB_ERR_INVAL);
	assert_int_equal(bridge_topic_up("p", "d", "t", out, 0), HUB_ERR_INVAL);
}

static void
test_topic_down(void **state)
{
	char dev[HUB_ID_MAX + 1], small[3];
	const char *rel;
	int sess;

	assert_int_equal(bridge_topic_down("devices", "devices/d1/cmd/reboot",
					   dev, sizeof(dev), &rel, &sess),
			 HUB_OK);
	assert_string_equal(dev, "d1");
	assert_string_equal(rel, "cmd/reboot");
	assert_int_equal(sess, 0);

	assert_int_equal(bridge_topic_down("a/b", "a/b/X-y_1/cmd/config/17",
					   dev, sizeof(dev), &rel, &sess),
			 HUB_OK);
	assert_string_equal(dev, "X-y_1");
	assert_string_equal(rel, "cmd/config/17");

	assert_int_equal(bridge_topic_down("devices", "hub/sessions/d9", dev,
					   sizeof(dev), &rel, &sess),
			 HUB_OK);
	assert_string_equal(dev, "d9");
	assert_int_equal(sess, 1);
	assert_string_equal(rel, "");

	/* not ours, or malformed */
	assert_int_equal(bridge_topic_down("devices", "devices/d1/status", dev,
					   sizeof(dev), &rel, &sess),
			 HUB_ERR_INVAL);
	assert_int_equal(bridge_topic_down("devices", "devices/d1/cmd", dev,
					   sizeof(dev), &rel, &sess),
			 HUB_ERR_INVAL);
	assert_int_equal(bridge_topic_down("devices", "devices/d1/cmd/", dev,
					   sizeof(dev), &rel, &sess),
			 HUB_ERR_INVAL);
	assert_int_equal(bridge_topic_down("devices", "devicesX/d1/cmd/a", dev,
					   sizeof(dev), &rel, &sess),
			 HUB_ERR_INVAL);
	assert_int_equal(bridge_topic_down("devices", "other/d1/cmd/a", dev,
					   sizeof(dev), &rel, &sess),
			 HUB_ERR_INVAL);
	assert_int_equal(bridge_topic_down("devices", "devices/d.1/cmd/a", dev,
					   sizeof(dev), &rel, &sess),
			 HUB_ERR_INVAL);
	assert_int_equal(bridge_topic_down("devices", "devices//cmd/a", dev,
					   sizeof(dev), &rel, &sess),
			 HUB_ERR_INVAL);
	assert_int_equal(bridge_topic_down("devices", "hub/sessions/", dev,
					   sizeof(dev), &rel, &sess),
			 HUB_ERR_INVAL);
	assert_int_equal(bridge_topic_down("devices", "hub/sessions/a/b", dev,
					   sizeof(dev), &rel, &sess),
			 HUB_ERR_INVAL);
	assert_int_equal(bridge_topic_down("devices", "devices/abc/cmd/a",
					   small, sizeof(small), &rel, &sess),
			 HUB_ERR_TOOBIG);
	assert_int_equal(
	    bridge_topic_down("devices", NULL, dev, sizeof(dev), &rel, &sess),
	    HUB_ERR_INVAL);
}

/* up then down gives back the device and the relative topic */
static void
test_topic_roundtrip(void **state)
{
	static const char *rels[] = {"cmd/a", "cmd/config/17", "cmd/x-y_z"};
	char out[BRIDGE_FULL_TOPIC_MAX], dev[HUB_ID_MAX + 1];
	const char *rel;
	size_t i;
	int sess;

	for (i = 0; i < sizeof(rels) / sizeof(rels[0]); i++) {
		assert_int_equal(bridge_topic_up("devices", "dev42", rels[i],
						 out, sizeof(out)),
				 HUB_OK);
		assert_int_equal(bridge_topic_down("devices", out, dev,
						   sizeof(dev), &rel, &sess),
				 HUB_OK);
		assert_string_equal(dev, "dev42");
		assert_string_equal(rel, rels[i]);
	}
}

#define U8(s) bridge_utf8_valid((s), sizeof(s) - 1)

static void
test_utf8(void **state)
{
	assert_true(bridge_utf8_valid("", 0));
	assert_true(U8("plain ascii"));
	assert_true(U8("\xc2\x80"));	     /* U+0080 */
	assert_true(U8("\xdf\xbf"));	     /* U+07FF */
	assert_true(U8("\xe0\xa0\x80"));     /* U+0800 */
	assert_true(U8("\xed\x9f\xbf"));     /* U+D7FF */
	assert_true(U8("\xee\x80\x80"));     /* U+E000 */
	assert_true(U8("\xef\xbf\xbf"));     /* U+FFFF */
	assert_true(U8("\xf0\x90\x80\x80")); /* U+10000 */
	assert_true(U8("\xf4\x8f\xbf\xbf")); /* U+10FFFF */
	assert_true(U8("a\0b"));	     /* NUL is valid UTF-8 */

	assert_false(U8("\x80"));	      /* lone continuation */
	assert_false(U8("\xc0\x80"));	      /* overlong NUL */
	assert_false(U8("\xc1\xbf"));	      /* overlong */
	assert_false(U8("\xe0\x9f\xbf"));     /* overlong 3-byte */
	assert_false(U8("\xf0\x8f\xbf\xbf")); /* overlong 4-byte */
	assert_false(U8("\xed\xa0\x80"));     /* U+D800 surrogate */
	assert_false(U8("\xed\xbf\xbf"));     /* U+DFFF surrogate */
	assert_false(U8("\xf4\x90\x80\x80")); /* U+110000 */
	assert_false(U8("\xf5\x80\x80\x80"));
	assert_false(U8("\xff"));
	assert_false(U8("\xe2\x82"));	  /* truncated */
	assert_false(U8("\xe2\x28\xa1")); /* bad continuation */
	assert_false(bridge_utf8_valid(NULL, 1));
}

#define KIND(s) bridge_payload_kind((s), sizeof(s) - 1)

static void
test_payload_kind(void **state)
{
	/* one JSON value, surrounding whitespace allowed */
	assert_int_equal(KIND("{\"a\":1}"), BRIDGE_PL_JSON);
	assert_int_equal(KIND(" [1, 2.5, -3e2, true, null] \n"),
			 BRIDGE_PL_JSON);
	assert_int_equal(KIND("\"str\\u00e9\\n\""), BRIDGE_PL_JSON);
	assert_int_equal(KIND("42"), BRIDGE_PL_JSON);
	assert_int_equal(KIND("0"), BRIDGE_PL_JSON);
	assert_int_equal(KIND("-0.5E+3"), BRIDGE_PL_JSON);
	assert_int_equal(KIND("false"), BRIDGE_PL_JSON);
	assert_int_equal(KIND("{\"k\":\"caf\xc3\xa9\"}"), BRIDGE_PL_JSON);
	assert_int_equal(KIND("{\"a\":\"x-1\",\"b\":[0,10]}"), BRIDGE_PL_JSON);

	/* valid UTF-8 but not exactly one JSON value: text */
	assert_int_equal(KIND("hello"), BRIDGE_PL_TEXT);
	assert_int_equal(bridge_payload_kind("", 0), BRIDGE_PL_TEXT);
	assert_int_equal(KIND("1 2"), BRIDGE_PL_TEXT);
	assert_int_equal(KIND("{\"a\":1} x"), BRIDGE_PL_TEXT);
	assert_int_equal(KIND("{\"a\":1"), BRIDGE_PL_TEXT);
	assert_int_equal(KIND("01"), BRIDGE_PL_TEXT); /* cJSON takes it */
	assert_int_equal(KIND("1."), BRIDGE_PL_TEXT); /* cJSON takes it */
	assert_int_equal(KIND("-"), BRIDGE_PL_TEXT);
	assert_int_equal(KIND("+1"), BRIDGE_PL_TEXT);
	assert_int_equal(KIND(".5"), BRIDGE_PL_TEXT);
	assert_int_equal(KIND("\"a\tb\""), BRIDGE_PL_TEXT); /* raw control */
	assert_int_equal(KIND("\"\\x\""), BRIDGE_PL_TEXT);
	assert_int_equal(KIND("\"\\u12\""), BRIDGE_PL_TEXT);
	assert_int_equal(KIND("truex"), BRIDGE_PL_TEXT);
	assert_int_equal(KIND("1\0"), BRIDGE_PL_TEXT); /* NUL after value */
	assert_int_equal(KIND("\"a\0b\""), BRIDGE_PL_TEXT);
	assert_int_equal(KIND("NaN"), BRIDGE_PL_TEXT);

	/* not UTF-8: binary */
	assert_int_equal(KIND("\xff\xfe"), BRIDGE_PL_BINARY);
	assert_int_equal(KIND("\"\xc0\x80\""), BRIDGE_PL_BINARY);
	assert_int_equal(KIND("\x00\x01\x02\x80"), BRIDGE_PL_BINARY);
}

/* A value that is not NUL-terminated must be judged by its length only. */
static void
test_payload_not_terminated(void **state)
{
	char buf[8] = {'1', '2', '3', 'x', 'y', 'z', 'w', 'v'};

	assert_int_equal(bridge_payload_kind(buf, 3), BRIDGE_PL_JSON);
	assert_int_equal(bridge_payload_kind(buf, 4), BRIDGE_PL_TEXT);
	assert_int_equal(bridge_payload_kind(buf, 8), BRIDGE_PL_TEXT);
}

static void
test_uri_parse(void **state)
{
	char host[64];
	unsigned port;
	int tls;

	assert_int_equal(bridge__uri_parse("tcp://127.0.0.1:1883", host,
					   sizeof(host), &port, &tls),
			 HUB_OK);
	assert_string_equal(host, "127.0.0.1");
	assert_int_equal(port, 1883);
	assert_int_equal(tls, 0);

	assert_int_equal(bridge__uri_parse("ssl://broker.example.com", host,
					   sizeof(host), &port, &tls),
			 HUB_OK);
	assert_string_equal(host, "broker.example.com");
	assert_int_equal(port, 8883);
	assert_int_equal(tls, 1);

	assert_int_equal(
	    bridge__uri_parse("mqtt://h:1", host, sizeof(host), &port, &tls),
	    HUB_OK);
	assert_int_equal(port, 1);
	assert_int_equal(bridge__uri_parse("mqtts://h:9000", host, sizeof(host),
					   &port, &tls),
			 HUB_OK);
	assert_int_equal(port, 9000);
	assert_int_equal(tls, 1);

	assert_int_equal(bridge__uri_parse("tcp://[::1]:18830", host,
					   sizeof(host), &port, &tls),
			 HUB_OK);
	assert_string_equal(host, "::1");
	assert_int_equal(port, 18830);

	assert_int_equal(bridge__uri_parse("localhost:2000", host, sizeof(host),
					   &port, &tls),
			 HUB_OK);
	assert_string_equal(host, "localhost");
	assert_int_equal(port, 2000);

	assert_int_equal(
	    bridge__uri_parse("ws://h:80", host, sizeof(host), &port, &tls),
	    HUB_ERR_INVAL);
	assert_int_equal(
	    bridge__uri_parse("tcp://h:0", host, sizeof(host), &port, &tls),
	    HUB_ERR_INVAL);
	assert_int_equal(
	    bridge__uri_parse("tcp://h:65536", host, sizeof(host), &port, &tls),
	    HUB_ERR_INVAL);
	assert_int_equal(
	    bridge__uri_parse("tcp://h:12x", host, sizeof(host), &port, &tls),
	    HUB_ERR_INVAL);
	assert_int_equal(
	    bridge__uri_parse("tcp://:1883", host, sizeof(host), &port, &tls),
	    HUB_ERR_INVAL);
	assert_int_equal(
	    bridge__uri_parse("tcp://[::1", host, sizeof(host), &port, &tls),
	    HUB_ERR_INVAL);
	assert_int_equal(
	    bridge__uri_parse("tcp://h/x:1", host, sizeof(host), &port, &tls),
	    HUB_ERR_INVAL);
	assert_int_equal(bridge__uri_parse("tcp://averyveryverylonghost:1",
					   host, 8, &port, &tls),
			 HUB_ERR_TOOBIG);
}

static void
test_msg_new(void **state)
{
	struct bridge_msg *m;
	char big[HUB_ID_MAX + 2];

	m = bridge_msg_new(BRIDGE_PUB, "d1", "telemetry", "{\"t\":1}", 7);
	assert_non_null(m);
	assert_string_equal(m->device, "d1");
	assert_string_equal(m->topic, "telemetry");
	assert_int_equal(m->len, 7);
	assert_memory_equal(m->payload, "{\"t\":1}", 7);
	assert_int_equal(((char *)m->payload)[7], '\0');
	bridge_msg_free(m);

	m = bridge_msg_new(BRIDGE_SUB, "d1", NULL, NULL, 0);
	assert_non_null(m);
	assert_null(m->topic);
	assert_int_equal(m->len, 0);
	bridge_msg_free(m);

	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_null(bridge_msg_new(BRIDGE_SUB, big, NULL, NULL, 0));
	assert_null(bridge_msg_new(BRIDGE_PUB, "d", "t", NULL, 3));
	bridge_msg_free(NULL);
	bridge_ev_free(NULL);
}

/* Argument checks that need no broker (nothing is started). */
static void
test_new_and_submit_checks(void **state)
{
	struct bridge_config cfg = {
	    .broker = "tcp://127.0.0.1:1",
	    .mqtt_version = 5,
	    .hub_id = "hub1",
	    .client_id = "hub1-w0",
	    .prefix = "devices",
	    .max_pending = 2,
	    .window = 8,
	};
	struct bridge_msg *m;
	struct bridge *b;
	char err[128];

	cfg.broker = "ws://x:1";
	assert_null(bridge_new(&cfg, NULL, NULL, err, sizeof(err)));
	assert_true(err[0] != '\0');
	cfg.broker = "tcp://127.0.0.1:1";
	cfg.hub_id = "a/b";
	assert_null(bridge_new(&cfg, NULL, NULL, err, sizeof(err)));
	cfg.hub_id = "hub1";
	cfg.prefix = "dev/#";
	assert_null(bridge_new(&cfg, NULL, NULL, err, sizeof(err)));
	cfg.prefix = "devices";
	cfg.mqtt_version = 4;
	assert_null(bridge_new(&cfg, NULL, NULL, err, sizeof(err)));
	cfg.mqtt_version = 5;

	b = bridge_new(&cfg, NULL, NULL, err, sizeof(err));
	assert_non_null(b);
	assert_false(bridge_connected(b));
	assert_true(bridge_has_room(b));
	assert_null(bridge_poll(b));

	/* QoS 0 while disconnected: dropped, counted, caller keeps m */
	m = bridge_msg_new(BRIDGE_PUB, "d1", "t", "1", 1);
	assert_int_equal(bridge_submit(b, m), HUB_ERR_BROKER);
	/* bad topic / device */
	m->qos = 1;
	m->topic[0] = '#';
	assert_int_equal(bridge_submit(b, m), HUB_ERR_INVAL);
	m->topic[0] = 't';
	memcpy(m->device, "bad id", 7);
	assert_int_equal(bridge_submit(b, m), HUB_ERR_INVAL);
	memcpy(m->device, "d1", 3);
	/* QoS 1 is held while disconnected, up to max_pending */
	assert_int_equal(bridge_submit(b, m), HUB_OK);
	m = bridge_msg_new(BRIDGE_PUB, "d1", "t", "2", 1);
	m->qos = 1;
	assert_int_equal(bridge_submit(b, m), HUB_OK);
	assert_false(bridge_has_room(b));
	m = bridge_msg_new(BRIDGE_PUB, "d1", "t", "3", 1);
	m->qos = 1;
	assert_int_equal(bridge_submit(b, m), HUB_ERR_FULL);
	/* statuses are always taken */
	{
		struct bridge_msg *st =
		    bridge_msg_new(BRIDGE_STATUS, "d1", NULL, "{}", 2);

		assert_int_equal(bridge_submit(b, st), HUB_OK);
	}
	bridge_msg_free(m);
	{
		struct bridge_stats s;

		bridge_get_stats(b, &s);
		assert_int_equal(s.dropped_qos0, 1);
		assert_int_equal(s.connected, 0);
	}
	bridge_free(b); /* never started: frees what was submitted */
	bridge_free(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_topic_valid),
	    cmocka_unit_test(test_topic_up),
	    cmocka_unit_test(test_topic_down),
	    cmocka_unit_test(test_topic_roundtrip),
	    cmocka_unit_test(test_utf8),
	    cmocka_unit_test(test_payload_kind),
	    cmocka_unit_test(test_payload_not_terminated),
	    cmocka_unit_test(test_uri_parse),
	    cmocka_unit_test(test_msg_new),
	    cmocka_unit_test(test_new_and_submit_checks),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
