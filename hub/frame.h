/*
 * frame.h - device protocol v1 frames (docs/protocol.md), pure functions:
 * parsing what a device sends, with bounds, and building what the hub sends.
 * No I/O and no state; unit-tested in tests/unit/test_frame.c.
 */
#ifndef FRAME_H
#define FRAME_H

#include <stddef.h>
#include <stdint.h>

#define FRAME_MAX_DEPTH 32 /* JSON nesting a device may send */

enum frame_op { FRAME_PUB, FRAME_ACK, FRAME_PING, FRAME_PONG };

/* Error codes of the protocol's err frame. */
#define FRAME_E_BAD_FRAME "bad_frame"
#define FRAME_E_BAD_TOPIC "bad_topic"
#define FRAME_E_TOO_LARGE "too_large"
#define FRAME_E_RATE_LIMITED "rate_limited"
#define FRAME_E_INFLIGHT_FULL "inflight_full"
#define FRAME_E_BROKER_UNAVAILABLE "broker_unavailable"

struct frame_in {
	enum frame_op op;
	int qos;
	int has_id;
	uint32_t id;
	char topic[257]; /* pub: validated device-relative topic */
	char *payload;	 /* pub: MQTT payload bytes, malloc'd; caller frees */
	size_t payload_len;
};

/*
 * Parses one text frame (buf need not be NUL-terminated). On success HUB_OK
 * and *in filled (free in->payload). On a bad frame a HUB_ERR_* code, *code
 * set to one of FRAME_E_*, *msg to a short static explanation, and in->id /
 * in->has_id set when the frame carried a usable id (so the err can name it).
 * Uplink payload rule: a JSON string is published as its raw UTF-8, any
 * other value as its JSON text exactly as the device sent it.
 */
int frame_parse_text(const char *buf, size_t len, struct frame_in *in,
		     const char **code, const char **msg);
/*
 * Parses a binary frame: byte 0 = topic length L (1..255), L bytes of topic,
 * then the payload (QoS 0). Pointers into buf; nothing allocated.
 */
int frame_parse_binary(const uint8_t *buf, size_t len, char *topic,
		       size_t topiclen, const uint8_t **payload,
		       size_t *payload_len, const char **code);

/* Builders: write into out (cap bytes); return the length, or 0 if it did
 * not fit. */
size_t frame_ack(char *out, size_t cap, uint32_t id);
size_t frame_err(char *out, size_t cap, int has_id, uint32_t id,
		 const char *code, const char *msg);
size_t frame_pong(char *out, size_t cap);
/*
 * A downlink msg frame. kind is the bridge_pl classification of payload:
 * 0 JSON (inserted verbatim), 1 text (sent as a JSON string). id < 0: none.
 */
size_t frame_msg(char *out, size_t cap, const char *topic, const void *payload,
		 size_t len, int kind, int64_t id);
/* Worst-case size of frame_msg's output for a payload of len bytes. */
size_t frame_msg_bound(const char *topic, size_t len);
/* Binary downlink: [L][topic][payload]; 0 if topic is longer than 255. */
size_t frame_binary(uint8_t *out, size_t cap, const char *topic,
		    const void *payload, size_t len);

#endif
