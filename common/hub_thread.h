/*
 * hub_thread.h - thread ownership, asserted in debug builds.
 *
 * The file headers say which thread owns what ("the lws service thread
 * only"). An owner records the thread that claims it, at that thread's
 * start; HUB_ASSERT_THREAD(owner) at the entry of a function that belongs to
 * it aborts, naming the function, when another thread calls it. Builds that
 * define HUB_THREAD_CHECKS (Debug and the ASan build tools/test runs, see
 * CMakeLists.txt) check; others compile the macro to nothing.
 *
 * An owner nobody claimed (a unit test driving a module without its thread)
 * passes every check. Claim and release: the owning thread. The check: any
 * thread (the owner's fields are atomics).
 */
#ifndef HUB_THREAD_H
#define HUB_THREAD_H

#include <pthread.h>

struct hub_thread_owner {
	const char *name; /* "service", "reader", ...: named in the abort */
	pthread_t tid;	  /* valid while claimed */
	int claimed;	  /* atomic */
};

/* The calling thread owns o from now on. */
void hub_thread_claim(struct hub_thread_owner *o, const char *name);
/* Nobody owns o (the thread is about to end). NULL is fine. */
void hub_thread_release(struct hub_thread_owner *o);
/* 1 if o is unclaimed or the calling thread owns it. */
int hub_thread_owns(const struct hub_thread_owner *o);
/* Prints where the check failed and aborts. */
_Noreturn void hub_thread_fail(const struct hub_thread_owner *o,
			       const char *func, const char *file, int line);

#ifdef HUB_THREAD_CHECKS
#define HUB_ASSERT_THREAD(owner)                                               \
	do {                                                                   \
		if (!hub_thread_owns(owner))                                   \
			hub_thread_fail(owner, __func__, __FILE__, __LINE__);  \
	} while (0)
#else
#define HUB_ASSERT_THREAD(owner) ((void)sizeof(owner))
#endif

#endif
