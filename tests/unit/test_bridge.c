/*
 * test_bridge.c - the bridge's pure parts: broker URI parsing, message
 * allocation, argument checks. No broker, no threads. (Topic and payload
 * rules are proto's: tests/unit/test_proto.c.)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "bridge.h"
#include "bridge_int.h"

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
	    cmocka_unit_test(test_uri_parse),
	    cmocka_unit_test(test_msg_new),
	    cmocka_unit_test(test_new_and_submit_checks),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
