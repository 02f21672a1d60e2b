/* authlimit.c - per-address failure windows; see authlimit.h. */
#include "authlimit.h"
#include "hub_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WINDOW_MS 60000u
#define PROBES 8

struct entry {
	char addr[48];
	uint64_t start_ms; /* window start; 0: free */
	unsigned count;
};

struct authlimit {
	unsigned mask, limit;
	struct entry e[];
};

struct authlimit *
authlimit_new(unsigned slots, unsigned limit)
{
	struct authlimit *a;
	unsigned n = 16;

	while (n < slots && n < (1u << 24))
		n <<= 1;
	a = calloc(1, sizeof(*a) + n * sizeof(struct entry));
	if (!a)
		return NULL;
	a->mask = n - 1;
	a->limit = limit;
	return a;
}

void
authlimit_free(struct authlimit *a)
{
	free(a);
}

static struct entry *
lookup(struct authlimit *a, const char *addr, uint64_t now_ms, int create)
{
	uint32_t h = hub_hash_str(addr);
	struct entry *victim = NULL;
	unsigned i;

	for (i = 0; i < PROBES; i++) {
		struct entry *e = &a->e[(h + i) & a->mask];
		int live = e->start_ms && now_ms - e->start_ms < WINDOW_MS;

		if (live && !strcmp(e->addr, addr))
			return e;
		if (!live && !victim)
			victim = e;
	}
	if (!create)
		return NULL;
	if (!victim) /* all probes live: reuse the oldest */
		for (i = 0; i < PROBES; i++) {
			struct entry *e = &a->e[(h + i) & a->mask];
			if (!victim || e->start_ms < victim->start_ms)
				victim = e;
		}
	memset(victim, 0, sizeof(*victim));
	snprintf(victim->addr, sizeof(victim->addr), "%s", addr);
	victim->start_ms = now_ms ? now_ms : 1;
	return victim;
}

unsigned
authlimit_blocked(struct authlimit *a, const char *addr, uint64_t now_ms)
{
	struct entry *e = lookup(a, addr, now_ms, 0);

	if (!e || e->count < a->limit)
		return 0;
	return (unsigned)((e->start_ms + WINDOW_MS - now_ms + 999) / 1000);
}

void
authlimit_fail(struct authlimit *a, const char *addr, uint64_t now_ms)
{
	struct entry *e = lookup(a, addr, now_ms, 1);

	e->count++;
}
