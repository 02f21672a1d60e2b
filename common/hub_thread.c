/*
 * hub_thread.c - thread ownership for HUB_ASSERT_THREAD (hub_thread.h).
 *
 * Threads: claim and release on the owning thread; hub_thread_owns() on
 * any. claimed is published with release order after tid is written, so a
 * thread that reads it set also reads the owner's tid.
 */
#include "hub_thread.h"

#include <stdio.h>
#include <stdlib.h>

void
hub_thread_claim(struct hub_thread_owner *o, const char *name)
{
	o->name = name;
	o->tid = pthread_self();
	__atomic_store_n(&o->claimed, 1, __ATOMIC_RELEASE);
}

void
hub_thread_release(struct hub_thread_owner *o)
{
	if (o)
		__atomic_store_n(&o->claimed, 0, __ATOMIC_RELEASE);
}

int
hub_thread_owns(const struct hub_thread_owner *o)
{
	if (!__atomic_load_n(&o->claimed, __ATOMIC_ACQUIRE))
		return 1;
	return pthread_equal(o->tid, pthread_self()) != 0;
}

void
hub_thread_fail(const struct hub_thread_owner *o, const char *func,
		const char *file, int line)
{
	/* an assertion, like assert(): stderr, then abort */
	fprintf(stderr,
		"HUB-THREAD-ASSERT %s:%d: %s() called off the %s thread\n",
		file, line, func, o->name ? o->name : "owning");
	fflush(stderr);
	abort();
}
