/* test_frame.c - hub/frame.c: device frames in, hub frames out. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "hub_err.h"

static int
parse(const char *s, struct frame_in *in, const char **code)
{
	const char *msg;

	return frame_parse_text(s, strlen(s), in, code, &msg);
}

static void
pub_qos0_keeps_payload_bytes(void **state)
{
	struct frame_in in;
	const char *code;

	(void)state;
	assert_int_equal(parse("{\"op\":\"pub\",\"topic\":\"telemetry\","
			       "\"payload\": {\"t\": 21.50, "
			       "\"big\":12345678901234567890} ,\"qos\":0}",
			       &in, &code),
			 HUB_OK);
	assert_int_equal(in.op, FRAME_PUB);
	assert_int_equal(in.qos, 0);
	assert_string_equal(in.topic, "telemetry");
	/* exactly as sent: precision and spelling kept */
	assert_int_equal(
	    in.payload_len,
	    strlen("{\"t\": 21.50, \"big\":12345678901234567890}"));
	assert_memory_equal(in.payload,
			    "{\"t\": 21.50, \"big\":12345678901234567890}",
			    in.payload_len);
	free(in.payload);
}

static void
pub_string_payload_is_raw_utf8(void **state)
{
	struct frame_in in;
	const char *code;

	(void)state;
	assert_int_equal(
	    parse("{\"payload\":\"caf\\u00e9 \\\"x\\\"\",\"op\":\"pub\","
		  "\"topic\":\"a/b\"}",
		  &in, &code),
	    HUB_OK);
	assert_string_equal(in.payload, "caf\xc3\xa9 \"x\"");
	free(in.payload);
	/* the member named payload inside another object is not the payload */
	assert_int_equal(
	    parse("{\"op\":\"pub\",\"topic\":\"t\",\"meta\":{\"payload\":1},"
		  "\"payload\":[1, 2]}",
		  &in, &code),
	    HUB_OK);
	assert_string_equal(in.payload, "[1, 2]");
	free(in.payload);
	assert_int_equal(
	    parse("{\"op\":\"pub\",\"topic\":\"t\",\"payload\":-1.5e3}", &in,
		  &code),
	    HUB_OK);
	assert_string_equal(in.payload, "-1.5e3");
	free(in.payload);
}

static void
pub_qos1_needs_id(void **state)
{
	struct frame_in in;
	const char *code;

	(void)state;
	assert_int_equal(
	    parse("{\"op\":\"pub\",\"topic\":\"t\",\"payload\":1,\"qos\":1}",
		  &in, &code),
	    HUB_ERR_INVAL);
	assert_string_equal(code, FRAME_E_BAD_FRAME);
	assert_int_equal(
	    parse("{\"op\":\"pub\",\"topic\":\"t\",\"payload\":1,\"qos\":1,"
		  "\"id\":4294967295}",
		  &in, &code),
	    HUB_OK);
	assert_int_equal(in.qos, 1);
	assert_true(in.has_id);
	assert_int_equal(in.id, 4294967295u);
	free(in.payload);
	assert_int_equal(
	    parse("{\"op\":\"pub\",\"topic\":\"t\",\"payload\":1,\"qos\":1,"
		  "\"id\":4294967296}",
		  &in, &code),
	    HUB_ERR_INVAL);
	assert_int_equal(
	    parse("{\"op\":\"pub\",\"topic\":\"t\",\"payload\":1,\"qos\":1,"
		  "\"id\":1.5}",
		  &in, &code),
	    HUB_ERR_INVAL);
	assert_int_equal(
	    parse("{\"op\":\"pub\",\"topic\":\"t\",\"payload\":1,\"qos\":2,"
		  "\"id\":1}",
		  &in, &code),
	    HUB_ERR_INVAL);
	/* the err for a bad frame can still name its id */
	assert_true(in.has_id);
	assert_int_equal(in.id, 1);
}

static void
bad_topics(void **state)
{
	static const char *bad[] = {"",	      "/a",  "a//b",   "a/",
				    "+",      "a/#", "$SYS/x", "a/\\u0001",
				    "status", "cmd", "cmd/x"};
	struct frame_in in;
	const char *code;
	char buf[512];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(buf, sizeof(buf),
			 "{\"op\":\"pub\",\"topic\":\"%s\",\"payload\":1}",
			 bad[i]);
		assert_int_equal(parse(buf, &in, &code), HUB_ERR_INVAL);
		assert_string_equal(code, FRAME_E_BAD_TOPIC);
	}
	memset(buf, 0, sizeof(buf));
	i = (size_t)snprintf(buf, sizeof(buf),
			     "{\"op\":\"pub\",\"payload\":1,\"topic\":\"");
	memset(buf + i, 'x', 257);
	memcpy(buf + i + 257, "\"}", 3);
	assert_int_equal(parse(buf, &in, &code), HUB_ERR_INVAL);
	assert_string_equal(code, FRAME_E_BAD_TOPIC);
}

static void
reserved_prefixes_only(void **state)
{
	static const char *ok[] = {"statusx", "a/status", "cmdx/y", "a/cmd/b"};
	struct frame_in in;
	const char *code;
	char buf[256];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		snprintf(buf, sizeof(buf),
			 "{\"op\":\"pub\",\"topic\":\"%s\",\"payload\":1}",
			 ok[i]);
		assert_int_equal(parse(buf, &in, &code), HUB_OK);
		free(in.payload);
	}
}

static void
bad_frames(void **state)
{
	static const char *bad[] = {"",
				    "[]",
				    "null",
				    "{",
				    "{\"op\":1}",
				    "{\"op\":\"nope\"}",
				    "{\"op\":\"ack\"}",
				    "{\"op\":\"pub\",\"payload\":1}",
				    "{\"op\":\"pub\",\"topic\":\"t\"}",
				    "{\"op\":\"ack\",\"id\":-1}",
				    "{\"op\":\"ping\"} trailing"};
	struct frame_in in;
	const char *code;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(parse(bad[i], &in, &code), HUB_ERR_INVAL);
		assert_string_equal(code, FRAME_E_BAD_FRAME);
	}
}

static void
nesting_is_bounded(void **state)
{
	char buf[4096];
	struct frame_in in;
	const char *code;
	size_t n = 0;
	int i;

	(void)state;
	n += (size_t)snprintf(buf, sizeof(buf),
			      "{\"op\":\"pub\",\"topic\":\"t\",\"payload\":");
	for (i = 0; i < FRAME_MAX_DEPTH; i++)
		buf[n++] = '[';
	for (i = 0; i < FRAME_MAX_DEPTH; i++)
		buf[n++] = ']';
	buf[n++] = '}';
	buf[n] = '\0';
	assert_int_equal(parse(buf, &in, &code), HUB_ERR_INVAL); /* 33 deep */
	/* brackets inside strings do not count */
	assert_int_equal(parse("{\"op\":\"pub\",\"topic\":\"t\",\"payload\":"
			       "\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"}",
			       &in, &code),
			 HUB_OK);
	free(in.payload);
}

static void
not_nul_terminated(void **state)
{
	const char *s = "{\"op\":\"ping\"}tail";
	const char *code, *msg;
	struct frame_in in;

	(void)state;
	assert_int_equal(frame_parse_text(s, 13, &in, &code, &msg), HUB_OK);
	assert_int_equal(in.op, FRAME_PING);
}

static void
ack_and_ping(void **state)
{
	struct frame_in in;
	const char *code;

	(void)state;
	assert_int_equal(parse("{\"op\":\"ack\",\"id\":3}", &in, &code),
			 HUB_OK);
	assert_int_equal(in.op, FRAME_ACK);
	assert_int_equal(in.id, 3);
	assert_int_equal(parse("{\"op\":\"ping\"}", &in, &code), HUB_OK);
	assert_int_equal(in.op, FRAME_PING);
	assert_int_equal(parse("{\"op\":\"pong\"}", &in, &code), HUB_OK);
	assert_int_equal(in.op, FRAME_PONG);
}

static void
binary_frames(void **state)
{
	uint8_t f[] = {3, 'a', '/', 'b', 0xff, 0x00, 0x01};
	const uint8_t *payload;
	size_t plen;
	const char *code;
	char topic[256];

	(void)state;
	assert_int_equal(frame_parse_binary(f, sizeof(f), topic, sizeof(topic),
					    &payload, &plen, &code),
			 HUB_OK);
	assert_string_equal(topic, "a/b");
	assert_int_equal(plen, 3);
	assert_int_equal(payload[0], 0xff);
	f[0] = 0;
	assert_int_equal(frame_parse_binary(f, sizeof(f), topic, sizeof(topic),
					    &payload, &plen, &code),
			 HUB_ERR_INVAL);
	f[0] = 9; /* longer than the frame */
	assert_int_equal(frame_parse_binary(f, sizeof(f), topic, sizeof(topic),
					    &payload, &plen, &code),
			 HUB_ERR_INVAL);
	{
		/* the hub's own topics cannot be forged in binary either */
		uint8_t st[] = {6, 's', 't', 'a', 't', 'u', 's', '{', '}'};

		assert_int_equal(frame_parse_binary(st, sizeof(st), topic,
						    sizeof(topic), &payload,
						    &plen, &code),
				 HUB_ERR_INVAL);
		assert_string_equal(code, FRAME_E_BAD_TOPIC);
	}
	f[0] = 2; /* "a/" - empty level */
	assert_int_equal(frame_parse_binary(f, sizeof(f), topic, sizeof(topic),
					    &payload, &plen, &code),
			 HUB_ERR_INVAL);
	assert_string_equal(code, FRAME_E_BAD_TOPIC);
}

static void
builders(void **state)
{
	char out[512];
	uint8_t bin[16];
	size_t n;

	(void)state;
	n = frame_ack(out, sizeof(out), 7);
	assert_string_equal(out, "{\"op\":\"ack\",\"id\":7}");
	assert_int_equal(n, strlen(out));
	frame_err(out, sizeof(out), 1, 9, FRAME_E_RATE_LIMITED,
		  "slow \"down\"");
	assert_string_equal(
	    out, "{\"op\":\"err\",\"id\":9,\"code\":\"rate_limited\","
		 "\"msg\":\"slow \\\"down\\\"\"}");
	frame_err(out, sizeof(out), 0, 0, FRAME_E_BAD_FRAME, "x");
	assert_string_equal(
	    out, "{\"op\":\"err\",\"code\":\"bad_frame\",\"msg\":\"x\"}");
	n = frame_msg(out, sizeof(out), "cmd/reboot", "{\"delay\":5}", 11, 0,
		      3);
	assert_string_equal(out, "{\"op\":\"msg\",\"topic\":\"cmd/reboot\","
				 "\"payload\":{\"delay\":5},\"id\":3}");
	n = frame_msg(out, sizeof(out), "cmd/say", "hi\n\"", 4, 1, -1);
	assert_string_equal(out, "{\"op\":\"msg\",\"topic\":\"cmd/say\","
				 "\"payload\":\"hi\\u000a\\\"\"}");
	assert_true(n <= frame_msg_bound("cmd/say", 4));
	assert_int_equal(frame_msg(out, 20, "cmd/reboot", "{}", 2, 0, 1), 0);
	n = frame_binary(bin, sizeof(bin), "cmd/x", "\x00\x01", 2);
	assert_int_equal(n, 8);
	assert_int_equal(bin[0], 5);
	assert_memory_equal(bin + 1, "cmd/x\x00\x01", 7);
	assert_int_equal(frame_binary(bin, 4, "cmd/x", "", 0), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(pub_qos0_keeps_payload_bytes),
	    cmocka_unit_test(pub_string_payload_is_raw_utf8),
	    cmocka_unit_test(pub_qos1_needs_id),
	    cmocka_unit_test(bad_topics),
	    cmocka_unit_test(reserved_prefixes_only),
	    cmocka_unit_test(bad_frames),
	    cmocka_unit_test(nesting_is_bounded),
	    cmocka_unit_test(not_nul_terminated),
	    cmocka_unit_test(ack_and_ping),
	    cmocka_unit_test(binary_frames),
	    cmocka_unit_test(builders),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
