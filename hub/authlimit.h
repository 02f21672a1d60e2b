/*
 * authlimit.h - failed authentications per source address per minute
 * (--auth-fail-limit): past the limit an address gets 429 with Retry-After
 * until its minute is over. The limit is per hub: the supervisor creates
 * the table in shared memory before it forks, and every worker counts into
 * the same table (a robust process-shared mutex; a worker killed while
 * holding it does not wedge the others). A fixed-size table (old entries
 * are reused), so a flood of addresses cannot grow memory.
 *
 * Threads: any process sharing the mapping; in a worker ONLY the lws
 * service thread calls it.
 */
#ifndef AUTHLIMIT_H
#define AUTHLIMIT_H

#include <stdint.h>

struct authlimit;

/*
 * slots: table size (rounded to a power of two). Mapped shared, so
 * processes forked afterwards share it. NULL on failure. Free (unmap) in
 * the creating process with authlimit_free once the workers are gone.
 */
struct authlimit *authlimit_new(unsigned slots, unsigned limit);
void authlimit_free(struct authlimit *a);
/* 0 if addr may try now, else seconds to wait (for Retry-After). */
unsigned authlimit_blocked(struct authlimit *a, const char *addr,
			   uint64_t now_ms);
/*
 * Counts one failure for addr. Returns 1 when it is the first failure of
 * addr in its current minute (the caller records one auth_failed event per
 * address and minute), else 0.
 */
int authlimit_fail(struct authlimit *a, const char *addr, uint64_t now_ms);

#endif
