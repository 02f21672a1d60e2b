/*
 * hub_util.h - small pure helpers shared by every module: clocks, the
 * per-device token bucket, exponential backoff with full jitter. No I/O, no
 * state: unit-tested in tests/unit/test_common.c.
 */
#ifndef HUB_UTIL_H
#define HUB_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define HUB_ID_MAX 64 /* device ids: [A-Za-z0-9_-]{1,64} */

/* Wall clock in ms since the epoch (timestamps in rows and statuses). */
int64_t hub_clock_ms(void);
/* Monotonic clock in microseconds (durations, rate limits). */
uint64_t hub_clock_mono_us(void);

/* FNV-1a of a NUL-terminated string: the hash of our small tables. */
uint32_t hub_hash_str(const char *s);

/*
 * Token bucket: rate tokens per second, burst = rate. 8 bytes per device.
 * Starts full. hub_bucket_take() returns 1 and spends a token, or 0.
 */
struct hub_bucket {
	uint32_t milli;	  /* tokens x 1000 */
	uint32_t last_ms; /* monotonic ms, wraps after 49 days: handled */
};
void hub_bucket_init(struct hub_bucket *b, uint32_t rate, uint32_t now_ms);
int hub_bucket_take(struct hub_bucket *b, uint32_t rate, uint32_t now_ms);

/*
 * Exponential backoff with full jitter (AWS architecture blog): a delay
 * drawn uniformly from [0, min(cap, base * 2^attempt)]. rnd is any 32-bit
 * random value supplied by the caller, so the function stays pure.
 */
uint32_t hub_backoff_ms(unsigned attempt, uint32_t base_ms, uint32_t cap_ms,
			uint32_t rnd);

#endif
