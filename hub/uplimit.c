/* uplimit.c - two token buckets per session; see uplimit.h. */
#include "uplimit.h"

static void
refill(struct uplimit *u, const struct uplimit_conf *c, uint32_t now_ms)
{
	uint64_t el = (uint32_t)(now_ms - u->last_ms); /* wraps correctly */
	uint64_t fcap = (uint64_t)c->rate * 1000, bcap = c->burst * 1000;

	if (el > 3600000)
		el = 3600000; /* a long silence refills completely anyway */
	/* rate per second = rate per ms x 1000 / 1000: tokens x 1000 per ms */
	u->frames += el * c->rate;
	if (u->frames > fcap)
		u->frames = fcap;
	u->bytes += el * c->rate_bytes;
	if (u->bytes > bcap)
		u->bytes = bcap;
	u->last_ms = now_ms;
}

void
uplimit_init(struct uplimit *u, const struct uplimit_conf *c, uint32_t now_ms)
{
	u->frames = (uint64_t)c->rate * 1000;
	u->bytes = c->burst * 1000;
	u->last_ms = now_ms;
}

int
uplimit_charge(struct uplimit *u, const struct uplimit_conf *c, size_t len,
	       uint32_t now_ms)
{
	uint64_t need = (uint64_t)len * 1000;

	refill(u, c, now_ms);
	if (u->frames < 1000 || u->bytes < need)
		return 0;
	u->frames -= 1000;
	u->bytes -= need;
	return 1;
}
