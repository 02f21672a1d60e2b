/*
 * fuzz_binary.c - libFuzzer target: the binary frame decoder and builder
 * (proto_frame.c). Checks the decoded parts stay inside the input, and that
 * what the builder makes from them decodes to the same parts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char topic[256], topic2[256];
	const uint8_t *pl, *pl2;
	size_t plen, plen2, n;
	const char *code;
	uint8_t *out;

	if (proto_frame_parse_binary(data, size, topic, sizeof(topic), &pl,
				     &plen, &code) != HUB_OK) {
		if (!code)
			abort();
		return 0;
	}
	if (pl < data || pl + plen != data + size ||
	    !proto_topic_device_ok(topic, strlen(topic)))
		abort();
	out = malloc(size + 1);
	if (!out)
		return 0;
	n = proto_frame_binary(out, size + 1, topic, pl, plen);
	if (n != size || memcmp(out, data, size))
		abort();
	if (proto_frame_parse_binary(out, n, topic2, sizeof(topic2), &pl2,
				     &plen2, &code) != HUB_OK ||
	    strcmp(topic, topic2) || plen2 != plen)
		abort();
	free(out);
	return 0;
}
