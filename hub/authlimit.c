/* authlimit.c - per-address failure windows in shared memory; see
 * authlimit.h. */
#include "authlimit.h"
#include "hub_util.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#define WINDOW_MS 60000u
#define PROBES 8

struct entry {
	char addr[48];
	uint64_t start_ms; /* window start; 0: free */
	unsigned count;
};

struct authlimit {
	pthread_mutex_t lock; /* process-shared, robust */
	size_t size;	      /* of the mapping */
	unsigned mask, limit;
	struct entry e[];
};

struct authlimit *
authlimit_new(unsigned slots, unsigned limit)
{
	pthread_mutexattr_t ma;
	struct authlimit *a;
	unsigned n = 16;
	size_t size;

	while (n < slots && n < (1u << 24))
		n <<= 1;
	size = sizeof(*a) + n * sizeof(struct entry);
	a = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		 -1, 0);
	if (a == MAP_FAILED)
		return NULL;
	/* the mapping is zero-filled: every entry free */
	if (pthread_mutexattr_init(&ma) ||
	    pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED) ||
	    pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST) ||
	    pthread_mutex_init(&a->lock, &ma)) {
		munmap(a, size);
		return NULL;
	}
	pthread_mutexattr_destroy(&ma);
	a->size = size;
	a->mask = n - 1;
	a->limit = limit;
	return a;
}

void
authlimit_free(struct authlimit *a)
{
	if (!a)
		return;
	pthread_mutex_destroy(&a->lock);
	munmap(a, a->size);
}

static void
lock(struct authlimit *a)
{
	/* its holder died: the counts may be one off, which is harmless */
	if (pthread_mutex_lock(&a->lock) == EOWNERDEAD)
		pthread_mutex_consistent(&a->lock);
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
	struct entry *e;
	unsigned wait = 0;

	lock(a);
	e = lookup(a, addr, now_ms, 0);
	if (e && e->count >= a->limit)
		wait =
		    (unsigned)((e->start_ms + WINDOW_MS - now_ms + 999) / 1000);
	pthread_mutex_unlock(&a->lock);
	return wait;
}

int
authlimit_fail(struct authlimit *a, const char *addr, uint64_t now_ms)
{
	struct entry *e;
	int first;

	lock(a);
	e = lookup(a, addr, now_ms, 1);
	first = e->count++ == 0;
	pthread_mutex_unlock(&a->lock);
	return first;
}
