/*
 * fuzz_frame.c - libFuzzer target: the text frame envelope parser, the
 * strict JSON scanner and the downlink msg builder (proto_frame.c,
 * proto_json.c).
 *
 * Beyond "no crash, no sanitizer report", it checks the parser's promises:
 * an accepted frame is JSON by the validator too; an accepted pub has a
 * device-legal topic and a payload that is either valid JSON or (a string)
 * valid UTF-8; and every msg frame the hub builds from any payload is
 * itself strict JSON.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data, *code, *msg;
	struct proto_frame f;
	enum proto_pl kind;
	size_t cap, n;
	char *out;
	int rc;

	if (proto_utf8_valid(data, size)) {
		rc = proto_frame_parse_text(buf, size, &f, &code, &msg);
		if (rc == HUB_OK) {
			if (!proto_json_valid(buf, size))
				abort(); /* the envelope took what is not JSON
					  */
			if (f.op == PROTO_PUB) {
				if (!proto_topic_device_ok(f.topic,
							   f.topic_len) ||
				    strlen(f.topic) != f.topic_len)
					abort();
				if (!proto_utf8_valid(f.payload, f.payload_len))
					abort();
				if (f.payload != f.own &&
				    (f.payload < buf ||
				     f.payload + f.payload_len > buf + size))
					abort();
			}
			proto_frame_release(&f);
		} else if (!code || !msg) {
			abort();
		}
	}
	/* the same bytes as a downlink payload: the frame must be JSON */
	kind = proto_payload_kind(data, size);
	if (kind == PROTO_PL_BINARY)
		return 0;
	cap = proto_frame_msg_bound("cmd/x", size);
	out = malloc(cap);
	if (!out)
		return 0;
	n = proto_frame_msg(out, cap, "cmd/x", data, size, kind, 7);
	if (!n || !proto_json_valid(out, n))
		abort();
	free(out);
	return 0;
}
