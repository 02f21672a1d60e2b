/* test_common.c - common/: queue, token bucket, backoff, id syntax, thread
 * ownership. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hub_err.h"
#include "hub_queue.h"
#include "hub_thread.h"
#include "hub_util.h"

static void
queue_bounded_fifo(void **state)
{
	struct hub_queue *q = hub_queue_new(3);
	int a, b, c, d;
	void *out[8];

	(void)state;
	assert_non_null(q);
	assert_int_equal(hub_queue_push(q, &a), HUB_OK);
	assert_int_equal(hub_queue_push(q, &b), HUB_OK);
	assert_int_equal(hub_queue_push(q, &c), HUB_OK);
	assert_int_equal(hub_queue_push(q, &d), HUB_ERR_FULL);
	assert_int_equal(hub_queue_len(q), 3);
	assert_int_equal(hub_queue_pop_many(q, out, 2), 2);
	assert_ptr_equal(out[0], &a);
	assert_ptr_equal(out[1], &b);
	assert_int_equal(hub_queue_push(q, &d), HUB_OK); /* wraps */
	assert_int_equal(hub_queue_pop_many(q, out, 8), 2);
	assert_ptr_equal(out[0], &c);
	assert_ptr_equal(out[1], &d);
	assert_int_equal(hub_queue_wait(q, out, 8, 10), 0); /* time-out */
	hub_queue_close(q);
	assert_int_equal(hub_queue_push(q, &a), HUB_ERR_CLOSED);
	assert_int_equal(hub_queue_wait(q, out, 8, -1),
			 0); /* closed: no block */
	hub_queue_free(q);
	assert_null(hub_queue_new(0));
}

static void *
producer(void *arg)
{
	struct hub_queue *q = arg;
	uintptr_t i;

	for (i = 1; i <= 10000; i++)
		while (hub_queue_push(q, (void *)i) == HUB_ERR_FULL)
			;
	return NULL;
}

static void
queue_threads_keep_order(void **state)
{
	struct hub_queue *q = hub_queue_new(64);
	uintptr_t expect = 1;
	pthread_t t;
	void *out[32];

	(void)state;
	pthread_create(&t, NULL, producer, q);
	while (expect <= 10000) {
		size_t n = hub_queue_wait(q, out, 32, 1000), i;

		assert_true(n > 0);
		for (i = 0; i < n; i++)
			assert_int_equal((uintptr_t)out[i], expect++);
	}
	pthread_join(t, NULL);
	hub_queue_free(q);
}

static void
bucket_rate(void **state)
{
	struct hub_bucket b;
	uint32_t t = 1000;
	int ok = 0, i;

	(void)state;
	hub_bucket_init(&b, 10, t);
	for (i = 0; i < 20; i++)
		ok += hub_bucket_take(&b, 10, t);
	assert_int_equal(ok, 10); /* burst = rate */
	assert_int_equal(hub_bucket_take(&b, 10, t + 50), 0);
	assert_int_equal(hub_bucket_take(&b, 10, t + 100),
			 1); /* 1 per 100 ms */
	assert_int_equal(hub_bucket_take(&b, 10, t + 150), 0);
	/* a long pause refills only to the burst */
	ok = 0;
	for (i = 0; i < 20; i++)
		ok += hub_bucket_take(&b, 10, t + 100000);
	assert_int_equal(ok, 10);
	/* the ms clock wraps */
	hub_bucket_init(&b, 1, UINT32_MAX - 10);
	assert_int_equal(hub_bucket_take(&b, 1, UINT32_MAX - 10), 1);
	assert_int_equal(hub_bucket_take(&b, 1, UINT32_MAX - 5), 0);
	assert_int_equal(hub_bucket_take(&b, 1, 1000), 1);
}

static void
backoff_full_jitter(void **state)
{
	(void)state;
	assert_int_equal(hub_backoff_ms(0, 100, 10000, 0), 0);
	assert_int_equal(hub_backoff_ms(0, 100, 10000, 100), 100);
	assert_int_equal(hub_backoff_ms(0, 100, 10000, 101), 0); /* mod 101 */
	assert_int_equal(hub_backoff_ms(3, 100, 10000, 800), 800);
	assert_true(hub_backoff_ms(3, 100, 10000, UINT32_MAX) <= 800);
	assert_true(hub_backoff_ms(30, 100, 10000, UINT32_MAX) <= 10000);
	assert_int_equal(hub_backoff_ms(1000, 100, 10000, 10000), 10000);
}

static void
strerror_covers_codes(void **state)
{
	int e;

	(void)state;
	for (e = HUB_OK; e >= HUB_ERR_SCHEMA; e--)
		assert_string_not_equal(hub_strerror(e), "unknown error");
	assert_string_equal(hub_strerror(12345), "unknown error");
}

/* ---- thread ownership (hub_thread.h) ---------------------------------- */

static struct hub_thread_owner owner;

/* Stands for a function whose header says "the owner's thread only". */
static void
owner_only(void)
{
	HUB_ASSERT_THREAD(&owner);
}

static void *
call_owner_only(void *arg)
{
	(void)arg;
	owner_only();
	return NULL;
}

/*
 * Calls owner_only() from a new thread in a child process: the child's exit
 * status, and what it wrote on stderr into msg.
 */
static int
off_thread_call(char *msg, size_t cap)
{
	int fds[2], st = 0;
	size_t got = 0;
	ssize_t n;
	pid_t pid;

	assert_int_equal(pipe(fds), 0);
	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		pthread_t t;

		dup2(fds[1], 2);
		close(fds[0]);
		if (pthread_create(&t, NULL, call_owner_only, NULL) ||
		    pthread_join(t, NULL))
			_exit(3);
		_exit(0);
	}
	close(fds[1]);
	while (got + 1 < cap &&
	       (n = read(fds[0], msg + got, cap - 1 - got)) > 0)
		got += (size_t)n;
	msg[got] = '\0';
	close(fds[0]);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	return st;
}

static void
thread_assert_fires_off_thread(void **state)
{
	char msg[512];
	int st;

	(void)state;
	hub_thread_claim(&owner, "test-owner");
	owner_only(); /* the owning thread passes */
	assert_true(hub_thread_owns(&owner));
	st = off_thread_call(msg, sizeof(msg));
#ifdef HUB_THREAD_CHECKS
	/* the build tools/test runs checks: another thread aborts, named */
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGABRT);
	assert_non_null(strstr(msg, "HUB-THREAD-ASSERT"));
	assert_non_null(strstr(msg, "owner_only()"));
	assert_non_null(strstr(msg, "test-owner thread"));
#else
	/* a release build: the macro is nothing */
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
#endif
	/* released: any thread may call again */
	hub_thread_release(&owner);
	st = off_thread_call(msg, sizeof(msg));
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	assert_string_equal(msg, "");
}

static void *
owns_from_thread(void *arg)
{
	return (void *)(intptr_t)hub_thread_owns(arg);
}

static void
thread_owns_only_its_claim(void **state)
{
	struct hub_thread_owner o;
	pthread_t t;
	void *res;

	(void)state;
	memset(&o, 0, sizeof(o));
	assert_true(hub_thread_owns(&o)); /* unclaimed: nobody is refused */
	hub_thread_claim(&o, "mine");
	assert_true(hub_thread_owns(&o));
	assert_int_equal(pthread_create(&t, NULL, owns_from_thread, &o), 0);
	assert_int_equal(pthread_join(t, &res), 0);
	assert_int_equal((intptr_t)res, 0);
	hub_thread_release(&o);
	hub_thread_release(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(queue_bounded_fifo),
	    cmocka_unit_test(queue_threads_keep_order),
	    cmocka_unit_test(bucket_rate),
	    cmocka_unit_test(backoff_full_jitter),
	    cmocka_unit_test(strerror_covers_codes),
	    cmocka_unit_test(thread_owns_only_its_claim),
	    cmocka_unit_test(thread_assert_fires_off_thread),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
