/*
 * uplimit.h - what one device may send: frames and bytes per second (--rate,
 * --rate-bytes), two token buckets charged for every complete message
 * before it is parsed, so a device that floods (large frames, or pings and
 * acks that carry no publish) costs the service thread no parsing once it
 * is over its budget. Pure, 24 bytes per session, ONLY used from the lws
 * service thread that owns the session.
 */
#ifndef UPLIMIT_H
#define UPLIMIT_H

#include <stddef.h>
#include <stdint.h>

struct uplimit {
	uint64_t frames; /* tokens x 1000 */
	uint64_t bytes;	 /* tokens x 1000 */
	uint32_t last_ms;
};

/* The budget, shared by the sessions of a worker. */
struct uplimit_conf {
	uint32_t rate;	     /* frames per second; burst = rate */
	uint64_t rate_bytes; /* bytes per second */
	uint64_t burst;	     /* bytes: max(rate_bytes, the frame cap) */
};

/* Starts full. */
void uplimit_init(struct uplimit *u, const struct uplimit_conf *c,
		  uint32_t now_ms);
/*
 * Charges one message of len bytes: 1 and both spent, or 0 and nothing
 * spent (the message is dropped unparsed). now_ms: monotonic, may wrap.
 */
int uplimit_charge(struct uplimit *u, const struct uplimit_conf *c, size_t len,
		   uint32_t now_ms);

#endif
