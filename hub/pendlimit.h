/*
 * pendlimit.h - connections per source address that have not yet finished
 * TLS and an authenticated upgrade (--max-pending-per-addr). Each holds
 * buffers (about 40 KB) for up to --handshake-timeout seconds, so one
 * address must not hold many. A fixed-size table: a flood of addresses
 * cannot grow memory, and when an address finds no slot it is let through
 * uncounted rather than locking out strangers.
 *
 * One per worker, process-local on purpose: counts of a worker that dies
 * die with it (a shared table would keep a killed worker's counts forever).
 * With SO_REUSEPORT an address's connections spread over the workers, so
 * the cap is per worker. ONLY used from the lws service thread.
 */
#ifndef PENDLIMIT_H
#define PENDLIMIT_H

struct pendlimit;
struct pendlimit_slot;

/* slots: table size (rounded to a power of two). NULL on failure. */
struct pendlimit *pendlimit_new(unsigned slots, unsigned max);
void pendlimit_free(struct pendlimit *p);
/*
 * A new connection from addr. Returns the slot it was counted in (hand it
 * back to pendlimit_leave exactly once), or NULL with *refuse = 1 when addr
 * already holds max pending connections, or NULL with *refuse = 0 when the
 * table had no room (not counted).
 */
struct pendlimit_slot *pendlimit_enter(struct pendlimit *p, const char *addr,
				       int *refuse);
/* The connection authenticated or closed. Accepts NULL. */
void pendlimit_leave(struct pendlimit_slot *s);
/* Pending connections of addr now (tests, metrics). */
unsigned pendlimit_count(const struct pendlimit *p, const char *addr);

#endif
