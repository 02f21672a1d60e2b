/*
 * fuzz_topic.c - libFuzzer target: device ids, topic rules, the prefix
 * rule and the topic mapping both ways (proto_topic.c).
 *
 * Checks: a topic a device may publish never contains a wildcard, a NUL or
 * an empty level; mapping a valid id and command topic up and back down
 * gives them back; anything down() accepts names a valid id.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char s[600], full[1024], dev[HUB_ID_MAX + 1], rel[PROTO_TOPIC_MAX + 8];
	const char *t = (const char *)data, *r;
	int sess;
	size_t i;

	if (proto_topic_device_ok(t, size)) {
		if (memchr(t, '\0', size) || memchr(t, '+', size) ||
		    memchr(t, '#', size) || t[0] == '/' || t[0] == '$' ||
		    proto_topic_reserved(t, size))
			abort();
		for (i = 0; i + 1 < size; i++)
			if (t[i] == '/' && t[i + 1] == '/')
				abort();
	}
	if (proto_id_valid(t, size) && memchr(t, '/', size))
		abort();
	if (size >= sizeof(s))
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	proto_prefix_valid(s);
	/* down(): any string as an incoming MQTT topic */
	if (proto_topic_down("devices", s, dev, sizeof(dev), &r, &sess) ==
	    HUB_OK) {
		if (!proto_id_valid(dev, strlen(dev)))
			abort();
		if (!sess && strncmp(r, "cmd/", 4))
			abort();
	}
	/* up() then down(): a valid id and a valid cmd/ topic round-trip */
	if (size > 1 && strchr(s, '|')) {
		char *bar = strchr(s, '|');

		*bar = '\0';
		if (!proto_id_valid(s, strlen(s)) || strlen(bar + 1) > 200 ||
		    !proto_topic_valid(bar + 1, strlen(bar + 1)))
			return 0;
		snprintf(rel, sizeof(rel), "cmd/%s", bar + 1);
		if (proto_topic_up("devices", s, rel, full, sizeof(full)) !=
		    HUB_OK)
			abort();
		if (proto_topic_down("devices", full, dev, sizeof(dev), &r,
				     &sess) != HUB_OK ||
		    sess || strcmp(dev, s) || strcmp(r, rel))
			abort();
	}
	return 0;
}
