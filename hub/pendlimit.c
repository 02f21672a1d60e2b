/* pendlimit.c - pending connections per address; see pendlimit.h. */
#include "pendlimit.h"
#include "hub_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROBES 16

struct pendlimit_slot {
	char addr[48];
	unsigned n; /* 0: free */
};

struct pendlimit {
	unsigned mask, max;
	struct pendlimit_slot s[];
};

struct pendlimit *
pendlimit_new(unsigned slots, unsigned max)
{
	struct pendlimit *p;
	unsigned n = 16;

	while (n < slots && n < (1u << 24))
		n <<= 1;
	p = calloc(1, sizeof(*p) + n * sizeof(struct pendlimit_slot));
	if (!p)
		return NULL;
	p->mask = n - 1;
	p->max = max;
	return p;
}

void
pendlimit_free(struct pendlimit *p)
{
	free(p);
}

static struct pendlimit_slot *
find(const struct pendlimit *p, const char *addr,
     struct pendlimit_slot **free_slot)
{
	uint32_t h = hub_hash_str(addr);
	unsigned i;

	if (free_slot)
		*free_slot = NULL;
	for (i = 0; i < PROBES; i++) {
		struct pendlimit_slot *s =
		    (struct pendlimit_slot *)&p->s[(h + i) & p->mask];

		if (s->n && !strcmp(s->addr, addr))
			return s;
		if (!s->n && free_slot && !*free_slot)
			*free_slot = s;
	}
	return NULL;
}

struct pendlimit_slot *
pendlimit_enter(struct pendlimit *p, const char *addr, int *refuse)
{
	struct pendlimit_slot *s, *fs;

	*refuse = 0;
	s = find(p, addr, &fs);
	if (s) {
		if (s->n >= p->max) {
			*refuse = 1;
			return NULL;
		}
		s->n++;
		return s;
	}
	if (!fs)
		return NULL; /* every probe busy: let it through, uncounted */
	snprintf(fs->addr, sizeof(fs->addr), "%s", addr);
	fs->n = 1;
	return fs;
}

void
pendlimit_leave(struct pendlimit_slot *s)
{
	if (s && s->n)
		s->n--;
}

unsigned
pendlimit_count(const struct pendlimit *p, const char *addr)
{
	const struct pendlimit_slot *s = find(p, addr, NULL);

	return s ? s->n : 0;
}
