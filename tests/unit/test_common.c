/* test_common.c - common/: queue, token bucket, backoff, id syntax. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <string.h>

#include "hub_err.h"
#include "hub_queue.h"
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

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(queue_bounded_fifo),
	    cmocka_unit_test(queue_threads_keep_order),
	    cmocka_unit_test(bucket_rate),
	    cmocka_unit_test(backoff_full_jitter),
	    cmocka_unit_test(strerror_covers_codes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
