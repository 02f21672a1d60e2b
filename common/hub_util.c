/* hub_util.c - see hub_util.h. */
#include "hub_util.h"

#include <stdlib.h>
#include <time.h>

int64_t
hub_clock_ms(void)
{
	/* HUB_TEST_CLOCK_OFFSET_MS: a test-only skew of this process's wall
	 * clock (hubs with clocks an hour apart); read once */
	static int64_t offset;
	static int read_once;
	struct timespec ts;

	if (!__atomic_load_n(&read_once, __ATOMIC_ACQUIRE)) {
		const char *e = getenv("HUB_TEST_CLOCK_OFFSET_MS");

		__atomic_store_n(&offset, e ? strtoll(e, NULL, 10) : 0,
				 __ATOMIC_RELAXED);
		__atomic_store_n(&read_once, 1, __ATOMIC_RELEASE);
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 +
	       __atomic_load_n(&offset, __ATOMIC_RELAXED);
}

uint64_t
hub_clock_mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint32_t
hub_hash_str(const char *s)
{
	uint32_t h = 2166136261u;

	while (*s)
		h = (h ^ (uint8_t)*s++) * 16777619u;
	return h;
}

void
hub_bucket_init(struct hub_bucket *b, uint32_t rate, uint32_t now_ms)
{
	uint64_t full = (uint64_t)rate * 1000u;

	b->milli = full > UINT32_MAX ? UINT32_MAX : (uint32_t)full;
	b->last_ms = now_ms;
}

int
hub_bucket_take(struct hub_bucket *b, uint32_t rate, uint32_t now_ms)
{
	uint64_t full = (uint64_t)rate * 1000u, m;
	uint32_t dt = now_ms - b->last_ms; /* unsigned: wrap-safe */

	if (full > UINT32_MAX)
		full = UINT32_MAX;
	/* refill: rate tokens/s = rate milli-tokens per ms */
	m = (uint64_t)b->milli + (uint64_t)dt * rate;
	b->milli = m > full ? (uint32_t)full : (uint32_t)m;
	b->last_ms = now_ms;
	if (b->milli < 1000)
		return 0;
	b->milli -= 1000;
	return 1;
}

uint32_t
hub_backoff_ms(unsigned attempt, uint32_t base_ms, uint32_t cap_ms,
	       uint32_t rnd)
{
	uint64_t ceil = base_ms;

	while (attempt-- && ceil < cap_ms)
		ceil <<= 1;
	if (ceil > cap_ms)
		ceil = cap_ms;
	return (uint32_t)((uint64_t)rnd % (ceil + 1));
}
