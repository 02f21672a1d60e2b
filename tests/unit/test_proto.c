/*
 * test_proto.c - proto/: device ids, topic rules and mapping, reserved
 * namespaces, UTF-8, strict JSON, payload mapping, frames in and out,
 * credentials in the upgrade request. Pure functions: no sockets.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub_err.h"
#include "proto.h"

/* the payload is not NUL-terminated: compare length and bytes */
#define ASSERT_PAYLOAD(f, lit)                                                 \
	do {                                                                   \
		assert_int_equal((f).payload_len, sizeof(lit) - 1);            \
		assert_memory_equal((f).payload, lit, sizeof(lit) - 1);        \
	} while (0)

static void
device_ids(void **state)
{
	char long_id[66];

	(void)state;
	assert_true(proto_id_valid("sensor-1_A", 10));
	assert_false(proto_id_valid("", 0));
	assert_false(proto_id_valid("a/b", 3));
	assert_false(proto_id_valid("a b", 3));
	assert_false(proto_id_valid("caf\xc3\xa9", 5));
	assert_false(proto_id_valid("a\0b", 3)); /* never cut at the NUL */
	assert_false(proto_id_valid("a000\r", 5));
	memset(long_id, 'a', sizeof(long_id));
	assert_true(proto_id_valid(long_id, 64));
	assert_false(proto_id_valid(long_id, 65));
}

#define VALID(s) proto_topic_valid((s), strlen(s))

static void
test_topic_valid(void **state)
{
	char big[PROTO_TOPIC_MAX + 2];

	assert_true(VALID("telemetry"));
	assert_true(VALID("a/b/c"));
	assert_true(VALID("sensors/temp-1/x_y"));
	assert_true(VALID("caf\xc3\xa9/\xe2\x82\xac")); /* café/€ */
	assert_true(VALID("a"));
	assert_true(VALID("$a" + 1));
	assert_true(VALID("a$"));

	assert_false(proto_topic_valid("", 0));
	assert_false(proto_topic_valid(NULL, 3));
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
	assert_false(proto_topic_valid("a\0b", 3));

	memset(big, 'x', sizeof(big));
	assert_true(proto_topic_valid(big, PROTO_TOPIC_MAX));
	assert_false(proto_topic_valid(big, PROTO_TOPIC_MAX + 1));
}

static void
test_topic_up(void **state)
{
	char out[64];

	assert_int_equal(
	    proto_topic_up("devices", "d1", "telemetry", out, sizeof(out)),
	    HUB_OK);
	assert_string_equal(out, "devices/d1/telemetry");
	assert_int_equal(
	    proto_topic_up("a/b", "dev_-9", "x/y", out, sizeof(out)), HUB_OK);
	assert_string_equal(out, "a/b/dev_-9/x/y");
	/* exactly fits: 13 chars + NUL */
	assert_int_equal(proto_topic_up("devices", "d1", "abc", out, 15),
			 HUB_OK);
	assert_string_equal(out, "devices/d1/abc");
	assert_int_equal(proto_topic_up("devices", "d1", "abc", out, 14),
			 HUB_ERR_TOOBIG);
	assert_string_equal(out, "");
	assert_int_equal(proto_topic_up(NULL, "d", "t", out, sizeof(out)),
			 HUB_ERR_INVAL);
	assert_int_equal(proto_topic_up("p", "d", "t", out, 0), HUB_ERR_INVAL);
}

static void
test_topic_down(void **state)
{
	char dev[HUB_ID_MAX + 1], small[3];
	const char *rel;
	int sess;

	assert_int_equal(proto_topic_down("devices", "devices/d1/cmd/reboot",
					  dev, sizeof(dev), &rel, &sess),
			 HUB_OK);
	assert_string_equal(dev, "d1");
	assert_string_equal(rel, "cmd/reboot");
	assert_int_equal(sess, 0);

	assert_int_equal(proto_topic_down("a/b", "a/b/X-y_1/cmd/config/17", dev,
					  sizeof(dev), &rel, &sess),
			 HUB_OK);
	assert_string_equal(dev, "X-y_1");
	assert_string_equal(rel, "cmd/config/17");

	assert_int_equal(proto_topic_down("devices", "hub/sessions/d9", dev,
					  sizeof(dev), &rel, &sess),
			 HUB_OK);
	assert_string_equal(dev, "d9");
	assert_int_equal(sess, 1);
	assert_string_equal(rel, "");

	/* not ours, or malformed */
	assert_int_equal(proto_topic_down("devices", "devices/d1/status", dev,
					  sizeof(dev), &rel, &sess),
			 HUB_ERR_INVAL);
	assert_int_equal(proto_topic_down("devices", "devices/d1/cmd", dev,
					  sizeof(dev), &rel, &sess),
			 HUB_ERR_INVAL);
	assert_int_equal(proto_topic_down("devices", "devices/d1/cmd/", dev,
					  sizeof(dev), &rel, &sess),
			 HUB_ERR_INVAL);
	assert_int_equal(proto_topic_down("devices", "devicesX/d1/cmd/a", dev,
					  sizeof(dev), &rel, &sess),
			 HUB_ERR_INVAL);
	assert_int_equal(proto_topic_down("devices", "other/d1/cmd/a", dev,
					  sizeof(dev), &rel, &sess),
			 HUB_ERR_INVAL);
	assert_int_equal(proto_topic_down("devices", "devices/d.1/cmd/a", dev,
					  sizeof(dev), &rel, &sess),
			 HUB_ERR_INVAL);
	assert_int_equal(proto_topic_down("devices", "devices//cmd/a", dev,
					  sizeof(dev), &rel, &sess),
			 HUB_ERR_INVAL);
	assert_int_equal(proto_topic_down("devices", "hub/sessions/", dev,
					  sizeof(dev), &rel, &sess),
			 HUB_ERR_INVAL);
	assert_int_equal(proto_topic_down("devices", "hub/sessions/a/b", dev,
					  sizeof(dev), &rel, &sess),
			 HUB_ERR_INVAL);
	assert_int_equal(proto_topic_down("devices", "devices/abc/cmd/a", small,
					  sizeof(small), &rel, &sess),
			 HUB_ERR_TOOBIG);
	assert_int_equal(
	    proto_topic_down("devices", NULL, dev, sizeof(dev), &rel, &sess),
	    HUB_ERR_INVAL);
}

/* up then down gives back the device and the relative topic */
static void
test_topic_roundtrip(void **state)
{
	static const char *rels[] = {"cmd/a", "cmd/config/17", "cmd/x-y_z"};
	char out[512], dev[HUB_ID_MAX + 1];
	const char *rel;
	size_t i;
	int sess;

	for (i = 0; i < sizeof(rels) / sizeof(rels[0]); i++) {
		assert_int_equal(proto_topic_up("devices", "dev42", rels[i],
						out, sizeof(out)),
				 HUB_OK);
		assert_int_equal(proto_topic_down("devices", out, dev,
						  sizeof(dev), &rel, &sess),
				 HUB_OK);
		assert_string_equal(dev, "dev42");
		assert_string_equal(rel, rels[i]);
	}
}

#define U8(s) proto_utf8_valid((s), sizeof(s) - 1)

static void
test_utf8(void **state)
{
	assert_true(proto_utf8_valid("", 0));
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
	assert_false(proto_utf8_valid(NULL, 1));
}

#define KIND(s) proto_payload_kind((s), sizeof(s) - 1)

static void
test_payload_kind(void **state)
{
	/* one JSON value, surrounding whitespace allowed */
	assert_int_equal(KIND("{\"a\":1}"), PROTO_PL_JSON);
	assert_int_equal(KIND(" [1, 2.5, -3e2, true, null] \n"), PROTO_PL_JSON);
	assert_int_equal(KIND("\"str\\u00e9\\n\""), PROTO_PL_JSON);
	assert_int_equal(KIND("42"), PROTO_PL_JSON);
	assert_int_equal(KIND("0"), PROTO_PL_JSON);
	assert_int_equal(KIND("-0.5E+3"), PROTO_PL_JSON);
	assert_int_equal(KIND("false"), PROTO_PL_JSON);
	assert_int_equal(KIND("{\"k\":\"caf\xc3\xa9\"}"), PROTO_PL_JSON);
	assert_int_equal(KIND("{\"a\":\"x-1\",\"b\":[0,10]}"), PROTO_PL_JSON);

	/* valid UTF-8 but not exactly one JSON value: text */
	assert_int_equal(KIND("hello"), PROTO_PL_TEXT);
	assert_int_equal(proto_payload_kind("", 0), PROTO_PL_TEXT);
	assert_int_equal(KIND("1 2"), PROTO_PL_TEXT);
	assert_int_equal(KIND("{\"a\":1} x"), PROTO_PL_TEXT);
	assert_int_equal(KIND("{\"a\":1"), PROTO_PL_TEXT);
	assert_int_equal(KIND("01"), PROTO_PL_TEXT); /* cJSON takes it */
	assert_int_equal(KIND("1."), PROTO_PL_TEXT); /* cJSON takes it */
	assert_int_equal(KIND("-"), PROTO_PL_TEXT);
	assert_int_equal(KIND("+1"), PROTO_PL_TEXT);
	assert_int_equal(KIND(".5"), PROTO_PL_TEXT);
	assert_int_equal(KIND("\"a\tb\""), PROTO_PL_TEXT); /* raw control */
	assert_int_equal(KIND("\"\\x\""), PROTO_PL_TEXT);
	assert_int_equal(KIND("\"\\u12\""), PROTO_PL_TEXT);
	assert_int_equal(KIND("truex"), PROTO_PL_TEXT);
	assert_int_equal(KIND("1\0"), PROTO_PL_TEXT); /* NUL after value */
	assert_int_equal(KIND("\"a\0b\""), PROTO_PL_TEXT);
	assert_int_equal(KIND("NaN"), PROTO_PL_TEXT);

	/* not UTF-8: binary */
	assert_int_equal(KIND("\xff\xfe"), PROTO_PL_BINARY);
	assert_int_equal(KIND("\"\xc0\x80\""), PROTO_PL_BINARY);
	assert_int_equal(KIND("\x00\x01\x02\x80"), PROTO_PL_BINARY);
}

/* A value that is not NUL-terminated must be judged by its length only. */
static void
test_payload_not_terminated(void **state)
{
	char buf[8] = {'1', '2', '3', 'x', 'y', 'z', 'w', 'v'};

	assert_int_equal(proto_payload_kind(buf, 3), PROTO_PL_JSON);
	assert_int_equal(proto_payload_kind(buf, 4), PROTO_PL_TEXT);
	assert_int_equal(proto_payload_kind(buf, 8), PROTO_PL_TEXT);
}

static int
parse(const char *s, struct proto_frame *in, const char **code)
{
	const char *msg;

	return proto_frame_parse_text(s, strlen(s), in, code, &msg);
}

static void
pub_qos0_keeps_payload_bytes(void **state)
{
	struct proto_frame in;
	const char *code;

	(void)state;
	assert_int_equal(parse("{\"op\":\"pub\",\"topic\":\"telemetry\","
			       "\"payload\": {\"t\": 21.50, "
			       "\"big\":12345678901234567890} ,\"qos\":0}",
			       &in, &code),
			 HUB_OK);
	assert_int_equal(in.op, PROTO_PUB);
	assert_int_equal(in.qos, 0);
	assert_string_equal(in.topic, "telemetry");
	/* exactly as sent: precision and spelling kept */
	assert_int_equal(
	    in.payload_len,
	    strlen("{\"t\": 21.50, \"big\":12345678901234567890}"));
	assert_memory_equal(in.payload,
			    "{\"t\": 21.50, \"big\":12345678901234567890}",
			    in.payload_len);
	proto_frame_release(&in);
}

static void
pub_string_payload_is_raw_utf8(void **state)
{
	struct proto_frame in;
	const char *code;

	(void)state;
	assert_int_equal(
	    parse("{\"payload\":\"caf\\u00e9 \\\"x\\\"\",\"op\":\"pub\","
		  "\"topic\":\"a/b\"}",
		  &in, &code),
	    HUB_OK);
	ASSERT_PAYLOAD(in, "caf\xc3\xa9 \"x\"");
	proto_frame_release(&in);
	/* the member named payload inside another object is not the payload */
	assert_int_equal(
	    parse("{\"op\":\"pub\",\"topic\":\"t\",\"meta\":{\"payload\":1},"
		  "\"payload\":[1, 2]}",
		  &in, &code),
	    HUB_OK);
	ASSERT_PAYLOAD(in, "[1, 2]");
	proto_frame_release(&in);
	assert_int_equal(
	    parse("{\"op\":\"pub\",\"topic\":\"t\",\"payload\":-1.5e3}", &in,
		  &code),
	    HUB_OK);
	ASSERT_PAYLOAD(in, "-1.5e3");
	proto_frame_release(&in);
}

static void
pub_qos1_needs_id(void **state)
{
	struct proto_frame in;
	const char *code;

	(void)state;
	assert_int_equal(
	    parse("{\"op\":\"pub\",\"topic\":\"t\",\"payload\":1,\"qos\":1}",
		  &in, &code),
	    HUB_ERR_INVAL);
	assert_string_equal(code, PROTO_E_BAD_FRAME);
	assert_int_equal(
	    parse("{\"op\":\"pub\",\"topic\":\"t\",\"payload\":1,\"qos\":1,"
		  "\"id\":4294967295}",
		  &in, &code),
	    HUB_OK);
	assert_int_equal(in.qos, 1);
	assert_true(in.has_id);
	assert_int_equal(in.id, 4294967295u);
	proto_frame_release(&in);
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
	struct proto_frame in;
	const char *code;
	char buf[512];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(buf, sizeof(buf),
			 "{\"op\":\"pub\",\"topic\":\"%s\",\"payload\":1}",
			 bad[i]);
		assert_int_equal(parse(buf, &in, &code), HUB_ERR_INVAL);
		assert_string_equal(code, PROTO_E_BAD_TOPIC);
	}
	memset(buf, 0, sizeof(buf));
	i = (size_t)snprintf(buf, sizeof(buf),
			     "{\"op\":\"pub\",\"payload\":1,\"topic\":\"");
	memset(buf + i, 'x', 257);
	memcpy(buf + i + 257, "\"}", 3);
	assert_int_equal(parse(buf, &in, &code), HUB_ERR_INVAL);
	assert_string_equal(code, PROTO_E_BAD_TOPIC);
}

static void
reserved_prefixes_only(void **state)
{
	static const char *ok[] = {"statusx", "a/status", "cmdx/y", "a/cmd/b"};
	struct proto_frame in;
	const char *code;
	char buf[256];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		snprintf(buf, sizeof(buf),
			 "{\"op\":\"pub\",\"topic\":\"%s\",\"payload\":1}",
			 ok[i]);
		assert_int_equal(parse(buf, &in, &code), HUB_OK);
		proto_frame_release(&in);
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
	struct proto_frame in;
	const char *code;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(parse(bad[i], &in, &code), HUB_ERR_INVAL);
		assert_string_equal(code, PROTO_E_BAD_FRAME);
	}
}

static void
nesting_is_bounded(void **state)
{
	char buf[4096];
	struct proto_frame in;
	const char *code;
	size_t n = 0;
	int i;

	(void)state;
	n += (size_t)snprintf(buf, sizeof(buf),
			      "{\"op\":\"pub\",\"topic\":\"t\",\"payload\":");
	for (i = 0; i < PROTO_FRAME_MAX_DEPTH; i++)
		buf[n++] = '[';
	for (i = 0; i < PROTO_FRAME_MAX_DEPTH; i++)
		buf[n++] = ']';
	buf[n++] = '}';
	buf[n] = '\0';
	assert_int_equal(parse(buf, &in, &code), HUB_ERR_INVAL); /* 33 deep */
	/* brackets inside strings do not count */
	assert_int_equal(parse("{\"op\":\"pub\",\"topic\":\"t\",\"payload\":"
			       "\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"}",
			       &in, &code),
			 HUB_OK);
	proto_frame_release(&in);
}

static void
not_nul_terminated(void **state)
{
	const char *s = "{\"op\":\"ping\"}tail";
	const char *code, *msg;
	struct proto_frame in;

	(void)state;
	assert_int_equal(proto_frame_parse_text(s, 13, &in, &code, &msg),
			 HUB_OK);
	assert_int_equal(in.op, PROTO_PING);
}

static void
ack_and_ping(void **state)
{
	struct proto_frame in;
	const char *code;

	(void)state;
	assert_int_equal(parse("{\"op\":\"ack\",\"id\":3}", &in, &code),
			 HUB_OK);
	assert_int_equal(in.op, PROTO_ACK);
	assert_int_equal(in.id, 3);
	assert_int_equal(parse("{\"op\":\"ping\"}", &in, &code), HUB_OK);
	assert_int_equal(in.op, PROTO_PING);
	assert_int_equal(parse("{\"op\":\"pong\"}", &in, &code), HUB_OK);
	assert_int_equal(in.op, PROTO_PONG);
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
	assert_int_equal(proto_frame_parse_binary(f, sizeof(f), topic,
						  sizeof(topic), &payload,
						  &plen, &code),
			 HUB_OK);
	assert_string_equal(topic, "a/b");
	assert_int_equal(plen, 3);
	assert_int_equal(payload[0], 0xff);
	f[0] = 0;
	assert_int_equal(proto_frame_parse_binary(f, sizeof(f), topic,
						  sizeof(topic), &payload,
						  &plen, &code),
			 HUB_ERR_INVAL);
	f[0] = 9; /* longer than the frame */
	assert_int_equal(proto_frame_parse_binary(f, sizeof(f), topic,
						  sizeof(topic), &payload,
						  &plen, &code),
			 HUB_ERR_INVAL);
	{
		/* the hub's own topics cannot be forged in binary either */
		uint8_t st[] = {6, 's', 't', 'a', 't', 'u', 's', '{', '}'};

		assert_int_equal(proto_frame_parse_binary(
				     st, sizeof(st), topic, sizeof(topic),
				     &payload, &plen, &code),
				 HUB_ERR_INVAL);
		assert_string_equal(code, PROTO_E_BAD_TOPIC);
	}
	f[0] = 2; /* "a/" - empty level */
	assert_int_equal(proto_frame_parse_binary(f, sizeof(f), topic,
						  sizeof(topic), &payload,
						  &plen, &code),
			 HUB_ERR_INVAL);
	assert_string_equal(code, PROTO_E_BAD_TOPIC);
}

static void
builders(void **state)
{
	char out[512];
	uint8_t bin[16];
	size_t n;

	(void)state;
	n = proto_frame_ack(out, sizeof(out), 7);
	assert_string_equal(out, "{\"op\":\"ack\",\"id\":7}");
	assert_int_equal(n, strlen(out));
	proto_frame_err(out, sizeof(out), 1, 9, PROTO_E_RATE_LIMITED,
			"slow \"down\"");
	assert_string_equal(
	    out, "{\"op\":\"err\",\"id\":9,\"code\":\"rate_limited\","
		 "\"msg\":\"slow \\\"down\\\"\"}");
	proto_frame_err(out, sizeof(out), 0, 0, PROTO_E_BAD_FRAME, "x");
	assert_string_equal(
	    out, "{\"op\":\"err\",\"code\":\"bad_frame\",\"msg\":\"x\"}");
	n = proto_frame_msg(out, sizeof(out), "cmd/reboot", "{\"delay\":5}", 11,
			    0, 3);
	assert_string_equal(out, "{\"op\":\"msg\",\"topic\":\"cmd/reboot\","
				 "\"payload\":{\"delay\":5},\"id\":3}");
	n = proto_frame_msg(out, sizeof(out), "cmd/say", "hi\n\"", 4, 1, -1);
	assert_string_equal(out, "{\"op\":\"msg\",\"topic\":\"cmd/say\","
				 "\"payload\":\"hi\\u000a\\\"\"}");
	assert_true(n <= proto_frame_msg_bound("cmd/say", 4));
	assert_int_equal(proto_frame_msg(out, 20, "cmd/reboot", "{}", 2, 0, 1),
			 0);
	n = proto_frame_binary(bin, sizeof(bin), "cmd/x", "\x00\x01", 2);
	assert_int_equal(n, 8);
	assert_int_equal(bin[0], 5);
	assert_memory_equal(bin + 1, "cmd/x\x00\x01", 7);
	assert_int_equal(proto_frame_binary(bin, 4, "cmd/x", "", 0), 0);
}

/* With --prefix hub, device "sessions" would publish to hub/sessions/... */
static void
prefix_never_overlaps_the_hub(void **state)
{
	(void)state;
	assert_true(proto_prefix_valid("devices"));
	assert_true(proto_prefix_valid("site1/devices"));
	assert_true(proto_prefix_valid("hubs"));
	assert_true(proto_prefix_valid("a/hub"));
	assert_false(proto_prefix_valid("hub"));
	assert_false(proto_prefix_valid("hub/devices"));
	assert_false(proto_prefix_valid("groups"));
	assert_false(proto_prefix_valid("fleet"));
	assert_false(proto_prefix_valid("fleet/x"));
	assert_false(proto_prefix_valid("$SYS"));
	assert_false(proto_prefix_valid(""));
	assert_false(proto_prefix_valid("a/+"));
	assert_false(proto_prefix_valid("a/#"));
	assert_false(proto_prefix_valid("a//b"));
	assert_false(proto_prefix_valid(NULL));
}

static int
parse_n(const char *s, size_t n, struct proto_frame *in, const char **code)
{
	const char *msg;

	return proto_frame_parse_text(s, n, in, code, &msg);
}
#define PARSE_LIT(lit, in, code) parse_n(lit, sizeof(lit) - 1, in, code)

/* \u0000 in a payload string is a 0 byte, kept: never cut at the NUL */
static void
nul_in_payload_is_kept(void **state)
{
	struct proto_frame in;
	const char *code;

	(void)state;
	assert_int_equal(PARSE_LIT("{\"op\":\"pub\",\"topic\":\"t\","
				   "\"payload\":\"a\\u0000b\"}",
				   &in, &code),
			 HUB_OK);
	ASSERT_PAYLOAD(in, "a\0b");
	proto_frame_release(&in);
	/* inside a JSON value the escape is kept as written */
	assert_int_equal(PARSE_LIT("{\"op\":\"pub\",\"topic\":\"t\","
				   "\"payload\":[\"a\\u0000b\"]}",
				   &in, &code),
			 HUB_OK);
	ASSERT_PAYLOAD(in, "[\"a\\u0000b\"]");
	proto_frame_release(&in);
	/* a surrogate pair becomes one 4-byte UTF-8 sequence */
	assert_int_equal(PARSE_LIT("{\"op\":\"pub\",\"topic\":\"t\","
				   "\"payload\":\"\\ud83d\\ude00\"}",
				   &in, &code),
			 HUB_OK);
	ASSERT_PAYLOAD(in, "\xf0\x9f\x98\x80");
	proto_frame_release(&in);
}

static void
nul_in_topic_is_bad_topic(void **state)
{
	struct proto_frame in;
	const char *code;

	(void)state;
	assert_int_equal(PARSE_LIT("{\"op\":\"pub\",\"topic\":\"a\\u0000b\","
				   "\"payload\":1}",
				   &in, &code),
			 HUB_ERR_INVAL);
	assert_string_equal(code, PROTO_E_BAD_TOPIC);
	assert_int_equal(PARSE_LIT("{\"op\":\"pub\",\"topic\":\"telemetry"
				   "\\u0000\",\"payload\":1}",
				   &in, &code),
			 HUB_ERR_INVAL);
	assert_string_equal(code, PROTO_E_BAD_TOPIC);
	/* an escaped, valid topic is fine */
	assert_int_equal(PARSE_LIT("{\"op\":\"pub\",\"topic\":\"a\\/b\","
				   "\"payload\":1}",
				   &in, &code),
			 HUB_OK);
	assert_string_equal(in.topic, "a/b");
	proto_frame_release(&in);
}

/* RFC 8259, where cJSON was lax: never acked, never published */
static void
not_json_is_bad_frame(void **state)
{
	static const char *const bad[] = {
	    "{\"op\":\"pub\",\"topic\":\"t\",\"payload\":\"a\tb\"}",
	    "{\"op\":\"pub\",\"topic\":\"t\",\"payload\":\"a\nb\"}",
	    "{\"op\":\"pub\",\"topic\":\"t\",\"payload\":\"a\x01\"}",
	    "{\"op\":\"pub\",\"topic\":\"t\tx\",\"payload\":1}",
	    "{\"op\":\"pub\",\"topic\":\"t\",\"payload\":01}",
	    "{\"op\":\"pub\",\"topic\":\"t\",\"payload\":1.}",
	    "{\"op\":\"pub\",\"topic\":\"t\",\"payload\":.5}",
	    "{\"op\":\"pub\",\"topic\":\"t\",\"payload\":-}",
	    "{\"op\":\"pub\",\"topic\":\"t\",\"payload\":1e}",
	    "{\"op\":\"pub\",\"topic\":\"t\",\"payload\":+1}",
	    "{\"op\":\"pub\",\"topic\":\"t\",\"payload\":[01]}",
	    "{\"op\":\"pub\",\"topic\":\"t\",\"payload\":{\"a\":1.}}",
	    "{\"op\":\"pub\",\"topic\":\"t\",\"payload\":\"\\ud800\"}",
	    "{\"op\":\"pub\",\"topic\":\"t\",\"payload\":\"\\udc00\"}",
	    "{\"op\":\"pub\",\"topic\":\"t\",\"payload\":\"\\ud800x\"}",
	    "{\"op\":\"pub\",\"topic\":\"t\",\"payload\":\"\\ud800\\u0041\"}",
	    "{\"op\":\"pub\",\"topic\":\"t\",\"payload\":[\"\\udfff\"]}",
	    "{\"op\":\"pub\",\"topic\":\"t\",\"payload\":\"\\x\"}",
	    "{\"op\":\"pub\",\"topic\":\"t\",\"payload\":\"\\u12\"}",
	    "{\"op\":\"pub\",\"topic\":\"t\",\"payload\":tru}",
	    "{\"op\":\"pub\",\"topic\":\"t\",\"payload\":NaN}",
	    "{\"op\":\"pub\",\"topic\":\"t\",\"payload\":[1,]}",
	    "{\"op\":\"pub\",\"topic\":\"t\",\"payload\":{\"a\"}}",
	    "{\"op\":\"pub\",\"topic\":\"t\",\"payload\":1,}",
	    "{'op':'ping'}",
	    "{op:\"ping\"}",
	    "{\"op\":\"ping\"}}",
	    "{\"op\":\"ping\",\"id\":01}",
	    /* a member twice: which one counts would be a guess */
	    "{\"op\":\"ping\",\"op\":\"pub\"}",
	    "{\"op\":\"pub\",\"topic\":\"t\",\"payload\":1,\"payload\":2}",
	    "{\"op\":\"pub\",\"topic\":\"a\",\"topic\":\"status\","
	    "\"payload\":1}",
	};
	struct proto_frame in;
	const char *code;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parse(bad[i], &in, &code) != HUB_ERR_INVAL)
			fail_msg("accepted: %s", bad[i]);
		assert_string_equal(code, PROTO_E_BAD_FRAME);
	}
	/* a raw NUL byte inside a string is a control character too */
	assert_int_equal(PARSE_LIT("{\"op\":\"pub\",\"topic\":\"t\","
				   "\"payload\":\"a\0b\"}",
				   &in, &code),
			 HUB_ERR_INVAL);
	assert_string_equal(code, PROTO_E_BAD_FRAME);
	/* ... and between members */
	assert_int_equal(PARSE_LIT("{\"op\":\"ping\"\0}", &in, &code),
			 HUB_ERR_INVAL);
}

static void
strict_json_still_takes_json(void **state)
{
	static const char *const ok[] = {
	    " {\"op\" : \"ping\" } \r\n",
	    "{\"op\":\"ping\",\"x\":{\"op\":\"pub\",\"op\":1}}",
	    "{\"op\":\"p\\u0069ng\"}",
	    "{\"\\u006fp\":\"ping\"}",
	    "{\"op\":\"pub\",\"topic\":\"t\",\"payload\":-0.0e-0}",
	    "{\"op\":\"pub\",\"topic\":\"t\",\"payload\":[{},[],\"\",0]}",
	    "{\"op\":\"pub\",\"topic\":\"t\",\"payload\":\"\\b\\f\\n\\r\\t\"}",
	    "{\"op\":\"pub\",\"topic\":\"caf\xc3\xa9\",\"payload\":"
	    "\"\xe2\x82\xac\"}",
	};
	struct proto_frame in;
	const char *code;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		if (parse(ok[i], &in, &code) != HUB_OK)
			fail_msg("refused: %s", ok[i]);
		proto_frame_release(&in);
	}
	assert_true(proto_json_valid("\"\\ud83d\\ude00\"", 14));
	assert_false(proto_json_valid("\"\\ud83d\"", 8));
	assert_false(proto_json_valid("", 0));
	assert_false(proto_json_valid("  ", 2));
}

static void
credentials_never_truncate(void **state)
{
	const char *t, *id;
	size_t n;

	(void)state;
	/* the path: the id over its full decoded length */
	assert_int_equal(proto_device_path("/v1/devices/a000", 16, &id, &n),
			 HUB_OK);
	assert_int_equal(n, 4);
	assert_memory_equal(id, "a000", 4);
	assert_int_equal(proto_device_path("/v1/devices/a000\rX", 18, &id, &n),
			 HUB_ERR_INVAL);
	assert_int_equal(proto_device_path("/v1/devices/a000\0X", 18, &id, &n),
			 HUB_ERR_INVAL);
	assert_int_equal(proto_device_path("/v1/devices/a000\0", 17, &id, &n),
			 HUB_ERR_INVAL);
	assert_int_equal(proto_device_path("/v1/devices/", 12, &id, &n),
			 HUB_ERR_INVAL);
	assert_int_equal(proto_device_path("/v1/device/a", 12, &id, &n),
			 HUB_ERR_NOTFOUND);
	assert_int_equal(proto_device_path("/v1/devices/a/b", 15, &id, &n),
			 HUB_ERR_INVAL);

	/* Authorization: Bearer */
	assert_int_equal(proto_cred_bearer("Bearer tok", 10, &t, &n), HUB_OK);
	assert_int_equal(n, 3);
	assert_memory_equal(t, "tok", 3);
	assert_int_equal(proto_cred_bearer("bearer   tok \t ", 15, &t, &n),
			 HUB_OK); /* RFC 9110 5.5: trailing OWS ignored */
	assert_int_equal(n, 3);
	assert_int_equal(proto_cred_bearer("Bearer tok\0junk", 15, &t, &n),
			 HUB_ERR_INVAL);
	assert_int_equal(proto_cred_bearer("Bearer tok\0", 11, &t, &n),
			 HUB_ERR_INVAL);
	assert_int_equal(proto_cred_bearer("Bearer tok\r\nX: y", 16, &t, &n),
			 HUB_ERR_INVAL);
	assert_int_equal(proto_cred_bearer("Bearer tok junk", 15, &t, &n),
			 HUB_ERR_INVAL);
	assert_int_equal(proto_cred_bearer("Bearer ", 7, &t, &n),
			 HUB_ERR_INVAL);
	assert_int_equal(proto_cred_bearer("Basic abc", 9, &t, &n),
			 HUB_ERR_NOTFOUND);
	assert_int_equal(proto_cred_bearer("Bearertok", 9, &t, &n),
			 HUB_ERR_NOTFOUND);

	/* ?token= (decoded by the HTTP parser: %0D%0A are CR LF here) */
	assert_int_equal(proto_cred_urlarg("token=abc", 9, "token", &t, &n),
			 HUB_OK);
	assert_int_equal(n, 3);
	assert_int_equal(
	    proto_cred_urlarg("token=abc\r\nX", 12, "token", &t, &n),
	    HUB_ERR_INVAL);
	assert_int_equal(proto_cred_urlarg("token=abc\0", 10, "token", &t, &n),
			 HUB_ERR_INVAL);
	assert_int_equal(proto_cred_urlarg("token=", 6, "token", &t, &n),
			 HUB_ERR_INVAL);
	assert_int_equal(proto_cred_urlarg("tokens=a", 8, "token", &t, &n),
			 HUB_ERR_NOTFOUND);
	assert_int_equal(proto_cred_urlarg("x=a", 3, "token", &t, &n),
			 HUB_ERR_NOTFOUND);
	assert_false(proto_token_ok("", 0));
	assert_true(proto_token_ok("a.b-c_d~e+f/g=", 14));
	assert_false(proto_token_ok("caf\xc3\xa9", 5));
}

static void
subprotocol_offers(void **state)
{
	const char *t;
	size_t n;
	int v1;

	(void)state;
	assert_int_equal(proto_subprotocols("hub.v1", 6, &v1, &t, &n), HUB_OK);
	assert_true(v1);
	assert_null(t);
	assert_int_equal(
	    proto_subprotocols("hub.v1, bearer.abc.def", 22, &v1, &t, &n),
	    HUB_OK);
	assert_true(v1);
	assert_int_equal(n, 7);
	assert_memory_equal(t, "abc.def", 7);
	assert_int_equal(proto_subprotocols("chat", 4, &v1, &t, &n), HUB_OK);
	assert_false(v1);
	assert_int_equal(
	    proto_subprotocols("hub.v1,bearer.a,bearer.b", 24, &v1, &t, &n),
	    HUB_ERR_INVAL);
	assert_int_equal(
	    proto_subprotocols("hub.v1,bearer.a\0b", 17, &v1, &t, &n),
	    HUB_ERR_INVAL);
	assert_int_equal(proto_subprotocols("hub.v1\0", 7, &v1, &t, &n),
			 HUB_ERR_INVAL);
}

static void
upgrade_request_rules(void **state)
{
	struct proto_upgrade u = {
	    "HTTP/1.1", 8, 9, "dGhlIHNhbXBsZSBub25jZQ==", 24, "13", 2,
	    NULL,	0, 0};
	const char *why;

	(void)state;
	assert_int_equal(proto_upgrade_status(&u, &why), 0);
	u.version = "HTTP/1.0";
	assert_int_equal(proto_upgrade_status(&u, &why), 400);
	u.version_len = 0; /* a request line cut at an encoded CR */
	assert_int_equal(proto_upgrade_status(&u, &why), 400);
	u.version = "HTTP/1.1";
	u.version_len = 8;
	u.host_len = 0;
	assert_int_equal(proto_upgrade_status(&u, &why), 400);
	u.host_len = 1;
	u.wsversion_len = 0;
	assert_int_equal(proto_upgrade_status(&u, &why), 426);
	u.wsversion = "8";
	u.wsversion_len = 1;
	assert_int_equal(proto_upgrade_status(&u, &why), 426);
	u.wsversion = "13";
	u.wsversion_len = 2;
	u.key_len = 0;
	assert_int_equal(proto_upgrade_status(&u, &why), 400);
	assert_non_null(why);
	assert_true(proto_ws_key_valid("AAAAAAAAAAAAAAAAAAAAAA==", 24));
	assert_true(proto_ws_key_valid("/////////////////////w==", 24));
	assert_false(proto_ws_key_valid("AAAAAAAAAAAAAAAAAAAAAB==", 24));
	assert_false(proto_ws_key_valid("AAAAAAAAAAAAAAAAAAAAA===", 24));
	assert_false(proto_ws_key_valid("AAAAAAAAAAAAAAAAAAAA-A==", 24));
	assert_false(proto_ws_key_valid("AAAAAAAAAAAAAAAAAAAAAA=", 23));
	assert_false(proto_ws_key_valid(NULL, 24));
	/* request smuggling: no body framing on the device port */
	u.key_len = 24;
	assert_int_equal(proto_upgrade_status(&u, &why), 0);
	u.transfer_encoding_len = 7;
	assert_int_equal(proto_upgrade_status(&u, &why), 400);
	u.transfer_encoding_len = 0;
	u.content_length = "5";
	u.content_length_len = 1;
	assert_int_equal(proto_upgrade_status(&u, &why), 400);
	assert_int_equal(proto_body_status("0", 1, 0), 0);
	assert_int_equal(proto_body_status(NULL, 0, 0), 0);
	assert_int_equal(proto_body_status("0,5", 3, 0), 400); /* two */
	assert_int_equal(proto_body_status("00", 2, 0), 400);
	assert_int_equal(proto_body_status("0", 1, 7), 400);
}

#define CLOSE(lit)                                                             \
	proto_ws_close_status((const unsigned char *)lit, sizeof(lit) - 1)

static void
close_frames(void **state)
{
	(void)state;
	assert_int_equal(proto_ws_close_status(NULL, 0), 0);
	assert_int_equal(CLOSE("\x03\xe8"), 0); /* 1000 */
	assert_int_equal(CLOSE("\x03\xe8ok"), 0);
	assert_int_equal(CLOSE("\x0f\xa1"), 0);	   /* 4001 */
	assert_int_equal(CLOSE("\x03\xf4"), 0);	   /* 1012 */
	assert_int_equal(CLOSE("\x03"), 1002);	   /* 1 byte */
	assert_int_equal(CLOSE("\x03\xe7"), 1002); /* 999 */
	assert_int_equal(CLOSE("\x03\xec"), 1002); /* 1004 */
	assert_int_equal(CLOSE("\x03\xed"), 1002); /* 1005 */
	assert_int_equal(CLOSE("\x03\xee"), 1002); /* 1006 */
	assert_int_equal(CLOSE("\x03\xf7"), 1002); /* 1015 */
	assert_int_equal(CLOSE("\x07\xd0"), 1002); /* 2000 */
	assert_int_equal(CLOSE("\x13\x88"), 1002); /* 5000 */
	assert_int_equal(CLOSE("\x00\x00"), 1002);
	assert_int_equal(CLOSE("\x03\xe8\xff"), 1007);
	assert_int_equal(CLOSE("\x03\xe8\xed\xa0\x80"), 1007);
}

static void
trusted_proxies_and_origins(void **state)
{
	struct proto_cidr c[4];
	char out[64];
	size_t n;

	(void)state;
	assert_int_equal(
	    proto_cidrs_parse("10.0.0.0/8, 192.168.1.7,fd00::/8", c, 4, &n),
	    HUB_OK);
	assert_int_equal(n, 3);
	assert_true(proto_cidrs_match(c, n, "10.1.2.3", 8));
	assert_true(proto_cidrs_match(c, n, "192.168.1.7", 11));
	assert_false(proto_cidrs_match(c, n, "192.168.1.8", 11));
	assert_true(proto_cidrs_match(c, n, "fd12::1", 7));
	assert_false(proto_cidrs_match(c, n, "fe80::1", 7));
	assert_false(proto_cidrs_match(c, n, "11.0.0.1", 8));
	assert_false(proto_cidrs_match(c, n, "10.0.0.1\0", 9));
	assert_int_equal(proto_cidrs_parse("10.0.0.0/33", c, 4, &n),
			 HUB_ERR_INVAL);
	assert_int_equal(proto_cidrs_parse("nohost", c, 4, &n), HUB_ERR_INVAL);
	assert_int_equal(proto_cidrs_parse("1.1.1.1,2.2.2.2", c, 1, &n),
			 HUB_ERR_TOOBIG);
	assert_int_equal(proto_cidrs_parse("", c, 4, &n), HUB_OK);
	assert_int_equal(n, 0);
	assert_int_equal(proto_cidrs_parse("10.0.0.0/8", c, 4, &n), HUB_OK);
	/* from the right, skipping our own proxies */
	assert_int_equal(
	    proto_forwarded_for("203.0.113.7", 11, c, n, out, sizeof(out)),
	    HUB_OK);
	assert_string_equal(out, "203.0.113.7");
	assert_int_equal(proto_forwarded_for("6.6.6.6, 203.0.113.7 ,10.0.0.2",
					     30, c, n, out, sizeof(out)),
			 HUB_OK);
	assert_string_equal(out, "203.0.113.7"); /* 6.6.6.6: client-written */
	assert_int_equal(proto_forwarded_for("junk, 203.0.113.7", 17, c, n, out,
					     sizeof(out)),
			 HUB_OK);
	assert_string_equal(out, "203.0.113.7");
	assert_int_equal(proto_forwarded_for("203.0.113.7, junk", 17, c, n, out,
					     sizeof(out)),
			 HUB_ERR_NOTFOUND);
	assert_int_equal(proto_forwarded_for("", 0, c, n, out, sizeof(out)),
			 HUB_ERR_NOTFOUND);
	/* Forwarded (RFC 7239) */
	assert_int_equal(
	    proto_forwarded("for=203.0.113.7", 15, c, n, out, sizeof(out)),
	    HUB_OK);
	assert_string_equal(out, "203.0.113.7");
	assert_int_equal(
	    proto_forwarded(
		"for=6.6.6.6, for=\"[2001:db8::17]:4711\";proto=https,"
		" For=10.0.0.2:80",
		67, c, n, out, sizeof(out)),
	    HUB_OK);
	assert_string_equal(out, "2001:db8::17");
	assert_int_equal(proto_forwarded("proto=http;for=\"203.0.113.9:1\"", 30,
					 c, n, out, sizeof(out)),
			 HUB_OK);
	assert_string_equal(out, "203.0.113.9");
	assert_int_equal(
	    proto_forwarded("for=unknown", 11, c, n, out, sizeof(out)),
	    HUB_ERR_NOTFOUND);
	assert_int_equal(proto_forwarded("for=_hidden, for=10.0.0.1", 25, c, n,
					 out, sizeof(out)),
			 HUB_ERR_NOTFOUND);
	assert_int_equal(
	    proto_forwarded("by=1.2.3.4", 10, c, n, out, sizeof(out)),
	    HUB_ERR_NOTFOUND);
	/* origins */
	assert_true(proto_origin_allowed(NULL, "https://x", 9));
	assert_true(proto_origin_allowed("", "https://x", 9));
	assert_true(proto_origin_allowed("*", "https://x", 9));
	assert_true(proto_origin_allowed("https://a.example, https://X",
					 "https://x", 9));
	assert_false(proto_origin_allowed("https://a.example", "https://x", 9));
	assert_false(proto_origin_allowed("https://x", "https://xy", 10));
	assert_false(proto_origin_allowed("https://x", "https://x\0", 10));
}

/* ---- PROXY protocol headers ---- */

#define PP(lit) proto_proxy_parse(lit, sizeof(lit) - 1, &pp)

static const unsigned char pp_sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
					 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

/* A v2 header: signature, ver_cmd, fam, then len bytes of body. */
static size_t
pp_v2(unsigned char *b, unsigned vc, unsigned fam, const void *body, size_t len)
{
	memcpy(b, pp_sig, 12);
	b[12] = (unsigned char)vc;
	b[13] = (unsigned char)fam;
	b[14] = (unsigned char)(len >> 8);
	b[15] = (unsigned char)len;
	if (len)
		memcpy(b + 16, body, len);
	return 16 + len;
}

static void
proxy_v1(void **state)
{
	struct proto_proxy pp;
	char a[64];
	const char *ok =
	    "PROXY TCP4 127.0.0.5 127.0.0.1 40000 8443\r\n\x16\x03";
	size_t i, n = strlen("PROXY TCP4 127.0.0.5 127.0.0.1 40000 8443\r\n");
	char line[160];

	(void)state;
	assert_int_equal(proto_proxy_parse(ok, strlen(ok), &pp), HUB_OK);
	assert_int_equal(pp.version, 1);
	assert_int_equal(pp.command, PROTO_PROXY_PROXY);
	assert_int_equal(pp.family, 4);
	assert_int_equal(pp.header_len, n); /* the TLS bytes are not its own */
	assert_int_equal(pp.src_port, 40000);
	assert_int_equal(pp.dst_port, 8443);
	assert_int_equal(proto_proxy_addr(&pp, a, sizeof(a)), HUB_OK);
	assert_string_equal(a, "127.0.0.5");
	assert_int_equal(proto_proxy_addr(&pp, a, 4), HUB_ERR_TOOBIG);
	/* every proper prefix asks for more */
	for (i = 1; i < n; i++)
		assert_int_equal(proto_proxy_parse(ok, i, &pp), HUB_ERR_BUSY);

	assert_int_equal(PP("PROXY TCP6 2001:db8::5 ::1 65535 0\r\n"), HUB_OK);
	assert_int_equal(pp.family, 6);
	assert_int_equal(pp.src_port, 65535);
	assert_int_equal(proto_proxy_addr(&pp, a, sizeof(a)), HUB_OK);
	assert_string_equal(a, "2001:db8::5");
	assert_int_equal(PP("PROXY UNKNOWN\r\n"), HUB_OK);
	assert_int_equal(pp.family, 0);
	assert_int_equal(pp.header_len, 15);
	assert_int_equal(proto_proxy_addr(&pp, a, sizeof(a)), HUB_ERR_NOTFOUND);
	assert_int_equal(PP("PROXY UNKNOWN ffff::1 ::1 1 2\r\n"), HUB_OK);
	assert_int_equal(pp.family, 0);

	/* not a PROXY header: TLS, HTTP (PUT and POST share the P) */
	assert_int_equal(PP("\x16\x03\x01\x02\x00"), HUB_ERR_NOTFOUND);
	assert_int_equal(PP("GET / HTTP/1.1\r\n"), HUB_ERR_NOTFOUND);
	assert_int_equal(PP("PUT / HTTP/1.1\r\n"), HUB_ERR_NOTFOUND);
	assert_int_equal(PP("POST"), HUB_ERR_NOTFOUND);
	assert_int_equal(PP("P"), HUB_ERR_BUSY);
	assert_int_equal(PP("PROX"), HUB_ERR_BUSY);
	assert_int_equal(proto_proxy_parse("", 0, &pp), HUB_ERR_BUSY);

	/* malformed: strict spaces, families, addresses, ports, CRLF */
	assert_int_equal(PP("PROXY TCP4 127.0.0.5  127.0.0.1 1 2\r\n"),
			 HUB_ERR_INVAL);
	assert_int_equal(PP("PROXY TCP4 127.0.0.5 127.0.0.1 1 2 \r\n"),
			 HUB_ERR_INVAL);
	assert_int_equal(PP("PROXY TCP4 127.0.0.5 127.0.0.1 1\r\n"),
			 HUB_ERR_INVAL);
	assert_int_equal(PP("PROXY TCP4 127.0.0.5 127.0.0.1 1 2 3\r\n"),
			 HUB_ERR_INVAL);
	assert_int_equal(PP("PROXY TCP4 ::1 ::1 1 2\r\n"), HUB_ERR_INVAL);
	assert_int_equal(PP("PROXY TCP6 127.0.0.5 127.0.0.1 1 2\r\n"),
			 HUB_ERR_INVAL);
	assert_int_equal(PP("PROXY TCP5 127.0.0.5 127.0.0.1 1 2\r\n"),
			 HUB_ERR_INVAL);
	assert_int_equal(PP("PROXY tcp4 127.0.0.5 127.0.0.1 1 2\r\n"),
			 HUB_ERR_INVAL);
	assert_int_equal(PP("PROXY TCP4 127.0.0.256 127.0.0.1 1 2\r\n"),
			 HUB_ERR_INVAL);
	assert_int_equal(PP("PROXY TCP4 127.0.0.5 127.0.0.1 65536 2\r\n"),
			 HUB_ERR_INVAL);
	assert_int_equal(PP("PROXY TCP4 127.0.0.5 127.0.0.1 01 2\r\n"),
			 HUB_ERR_INVAL);
	assert_int_equal(PP("PROXY TCP4 127.0.0.5 127.0.0.1 -1 2\r\n"),
			 HUB_ERR_INVAL);
	assert_int_equal(PP("PROXY TCP4 127.0.0.5 127.0.0.1 1 2\n"),
			 HUB_ERR_INVAL);
	assert_int_equal(PP("PROXY TCP4 127.0.0.5 127.0.0.1 1 2\rX"),
			 HUB_ERR_INVAL);
	assert_int_equal(PP("PROXY TCP4 127.0.0.5\0 127.0.0.1 1 2\r\n"),
			 HUB_ERR_INVAL);
	assert_int_equal(PP("PROXY UNKNOWNX\r\n"), HUB_ERR_INVAL);
	assert_int_equal(PP("PROXY \r\n"), HUB_ERR_INVAL);

	/* 107 bytes with the CRLF is the most; no CRLF by then is invalid */
	memset(line, ' ', sizeof(line));
	memcpy(line, "PROXY UNKNOWN", 13);
	memcpy(line + 105, "\r\n", 2);
	assert_int_equal(proto_proxy_parse(line, 107, &pp), HUB_OK);
	assert_int_equal(pp.header_len, 107);
	memset(line + 105, ' ', 2);
	memcpy(line + 106, "\r\n", 2);
	assert_int_equal(proto_proxy_parse(line, 106, &pp), HUB_ERR_BUSY);
	assert_int_equal(proto_proxy_parse(line, 108, &pp), HUB_ERR_INVAL);
	assert_int_equal(proto_proxy_parse(line, 150, &pp), HUB_ERR_INVAL);
}

static void
proxy_v2(void **state)
{
	struct proto_proxy pp;
	unsigned char b[600], body[300];
	size_t n, i;
	char a[64];

	(void)state;
	/* TCP over IPv4: 127.0.0.5:40000 -> 127.0.0.1:8443 */
	memcpy(body, "\x7f\x00\x00\x05\x7f\x00\x00\x01\x9c\x40\x20\xfb", 12);
	n = pp_v2(b, 0x21, 0x11, body, 12);
	b[n] = 0x16; /* the ClientHello after it is not its own */
	assert_int_equal(proto_proxy_parse(b, n + 1, &pp), HUB_OK);
	assert_int_equal(pp.version, 2);
	assert_int_equal(pp.command, PROTO_PROXY_PROXY);
	assert_int_equal(pp.family, 4);
	assert_int_equal(pp.header_len, 28);
	assert_int_equal(pp.src_port, 40000);
	assert_int_equal(pp.dst_port, 8443);
	assert_int_equal(proto_proxy_addr(&pp, a, sizeof(a)), HUB_OK);
	assert_string_equal(a, "127.0.0.5");
	for (i = 1; i < n; i++)
		assert_int_equal(proto_proxy_parse(b, i, &pp), HUB_ERR_BUSY);

	/* TLVs after the addresses: parsed from the addresses alone, the
	 * whole length to be skipped */
	memset(body + 12, 0x04, 200); /* PP2_TYPE_NOOP TLVs, say */
	n = pp_v2(b, 0x21, 0x11, body, 212);
	assert_int_equal(proto_proxy_parse(b, 28, &pp), HUB_OK);
	assert_int_equal(pp.header_len, 228);

	/* TCP over IPv6 */
	memset(body, 0, 36);
	body[0] = 0x20, body[1] = 0x01, body[2] = 0x0d, body[3] = 0xb8;
	body[15] = 5;
	body[31] = 1;
	body[32] = 0x9c, body[33] = 0x40, body[34] = 0x20, body[35] = 0xfb;
	n = pp_v2(b, 0x21, 0x21, body, 36);
	assert_int_equal(proto_proxy_parse(b, n - 1, &pp), HUB_ERR_BUSY);
	assert_int_equal(proto_proxy_parse(b, n, &pp), HUB_OK);
	assert_int_equal(pp.family, 6);
	assert_int_equal(proto_proxy_addr(&pp, a, sizeof(a)), HUB_OK);
	assert_string_equal(a, "2001:db8::5");

	/* LOCAL (a health check): any block, discarded; no address */
	n = pp_v2(b, 0x20, 0x00, NULL, 0);
	assert_int_equal(proto_proxy_parse(b, n, &pp), HUB_OK);
	assert_int_equal(pp.command, PROTO_PROXY_LOCAL);
	assert_int_equal(pp.family, 0);
	assert_int_equal(pp.header_len, 16);
	n = pp_v2(b, 0x20, 0xff, body, 5);
	assert_int_equal(proto_proxy_parse(b, n, &pp), HUB_OK);
	assert_int_equal(pp.header_len, 21);

	/* PROXY with UNSPEC or AF_UNIX: no address for us */
	n = pp_v2(b, 0x21, 0x00, NULL, 0);
	assert_int_equal(proto_proxy_parse(b, n, &pp), HUB_OK);
	assert_int_equal(pp.family, 0);
	memset(body, 'u', 216);
	n = pp_v2(b, 0x21, 0x31, body, 216);
	assert_int_equal(proto_proxy_parse(b, 16, &pp), HUB_OK);
	assert_int_equal(pp.family, 0);
	assert_int_equal(pp.header_len, 232);

	/* malformed: version, command, family, transport, short blocks */
	memcpy(body, "\x7f\x00\x00\x05\x7f\x00\x00\x01\x9c\x40\x20\xfb", 12);
	n = pp_v2(b, 0x11, 0x11, body, 12);
	assert_int_equal(proto_proxy_parse(b, n, &pp), HUB_ERR_INVAL);
	n = pp_v2(b, 0x31, 0x11, body, 12);
	assert_int_equal(proto_proxy_parse(b, n, &pp), HUB_ERR_INVAL);
	n = pp_v2(b, 0x22, 0x11, body, 12);
	assert_int_equal(proto_proxy_parse(b, n, &pp), HUB_ERR_INVAL);
	n = pp_v2(b, 0x21, 0x41, body, 12);
	assert_int_equal(proto_proxy_parse(b, n, &pp), HUB_ERR_INVAL);
	n = pp_v2(b, 0x21, 0x13, body, 12);
	assert_int_equal(proto_proxy_parse(b, n, &pp), HUB_ERR_INVAL);
	n = pp_v2(b, 0x21, 0x12, body, 12); /* UDP */
	assert_int_equal(proto_proxy_parse(b, n, &pp), HUB_ERR_INVAL);
	n = pp_v2(b, 0x21, 0x10, body, 12);
	assert_int_equal(proto_proxy_parse(b, n, &pp), HUB_ERR_INVAL);
	n = pp_v2(b, 0x21, 0x01, body, 12);
	assert_int_equal(proto_proxy_parse(b, n, &pp), HUB_ERR_INVAL);
	n = pp_v2(b, 0x21, 0x11, body, 11);
	assert_int_equal(proto_proxy_parse(b, n, &pp), HUB_ERR_INVAL);
	n = pp_v2(b, 0x21, 0x21, body, 35);
	assert_int_equal(proto_proxy_parse(b, n, &pp), HUB_ERR_INVAL);
	n = pp_v2(b, 0x21, 0x31, body, 215);
	assert_int_equal(proto_proxy_parse(b, n, &pp), HUB_ERR_INVAL);
	/* a signature that breaks off is not a header */
	n = pp_v2(b, 0x21, 0x11, body, 12);
	b[7] = 'X';
	assert_int_equal(proto_proxy_parse(b, n, &pp), HUB_ERR_NOTFOUND);
	assert_int_equal(proto_proxy_parse("\r\nGET", 5, &pp),
			 HUB_ERR_NOTFOUND);
	assert_int_equal(proto_proxy_parse("\r\n\r", 3, &pp), HUB_ERR_BUSY);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(device_ids),
	    cmocka_unit_test(test_topic_valid),
	    cmocka_unit_test(test_topic_up),
	    cmocka_unit_test(test_topic_down),
	    cmocka_unit_test(test_topic_roundtrip),
	    cmocka_unit_test(test_utf8),
	    cmocka_unit_test(test_payload_kind),
	    cmocka_unit_test(test_payload_not_terminated),
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
	    cmocka_unit_test(prefix_never_overlaps_the_hub),
	    cmocka_unit_test(nul_in_payload_is_kept),
	    cmocka_unit_test(nul_in_topic_is_bad_topic),
	    cmocka_unit_test(not_json_is_bad_frame),
	    cmocka_unit_test(strict_json_still_takes_json),
	    cmocka_unit_test(credentials_never_truncate),
	    cmocka_unit_test(subprotocol_offers),
	    cmocka_unit_test(upgrade_request_rules),
	    cmocka_unit_test(close_frames),
	    cmocka_unit_test(trusted_proxies_and_origins),
	    cmocka_unit_test(proxy_v1),
	    cmocka_unit_test(proxy_v2),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
