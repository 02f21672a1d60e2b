/*
 * authlimit.h - failed authentications per source address per minute
 * (--auth-fail-limit): past the limit an address gets 429 with Retry-After
 * until its minute is over. A fixed-size table (old entries are reused), so
 * a flood of addresses cannot grow memory. Pure, single-threaded: one per
 * worker, ONLY used from the lws service thread.
 */
#ifndef AUTHLIMIT_H
#define AUTHLIMIT_H

#include <stdint.h>

struct authlimit;

/* slots: table size (rounded to a power of two). NULL on failure. */
struct authlimit *authlimit_new(unsigned slots, unsigned limit);
void authlimit_free(struct authlimit *a);
/* 0 if addr may try now, else seconds to wait (for Retry-After). */
unsigned authlimit_blocked(struct authlimit *a, const char *addr,
			   uint64_t now_ms);
/* Counts one failure for addr. */
void authlimit_fail(struct authlimit *a, const char *addr, uint64_t now_ms);

#endif
