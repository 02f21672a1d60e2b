/*
 * test_metrics.c - unit tests of hub/metrics.c beyond the counters: the
 * process_* family read from /proc (values against getrusage/getrlimit,
 * fds counted without our own directory handle), its Prometheus text, and
 * the status page's history ring (order, wrap-around at an hour).
 *
 * Single-threaded; cmocka.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>
#include <fcntl.h>

#include <cmocka.h>

#include "metrics.h"

static void
test_proc_read(void **state)
{
	struct metrics_proc a, b;
	struct rlimit rl;
	int fd;

	(void)state;
	assert_int_equal(metrics_proc_read(getpid(), &a), 0);
	assert_true(a.rss_bytes > 1 << 20);
	assert_true(a.open_fds >= 3);
	/* the count (the size of /proc/self/fd on Linux >= 6.2) is what a
	 * listing shows, less the listing's own descriptor */
	{
		DIR *d = opendir("/proc/self/fd");
		struct dirent *de;
		long listed = 0;

		assert_non_null(d);
		while ((de = readdir(d)))
			if (de->d_name[0] != '.')
				listed++;
		closedir(d);
		assert_int_equal(listed - 1, a.open_fds);
	}
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
	assert_int_equal(a.max_fds, (long)rl.rlim_cur);
	assert_true(a.start_time > (double)time(NULL) - 3600);
	assert_true(a.start_time <= (double)time(NULL) + 1);
	assert_true(a.cpu_seconds >= 0);
	/* one more open file is one more fd */
	fd = open("/dev/null", O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(metrics_proc_read(getpid(), &b), 0);
	assert_int_equal(b.open_fds, a.open_fds + 1);
	close(fd);
	/* no such process */
	assert_int_equal(metrics_proc_read(0x7ffffff0, &b), -1);
}

static void
test_render_process(void **state)
{
	struct metrics *m = metrics_map(2);
	char out[8192];
	size_t n;

	(void)state;
	assert_non_null(m);
	m->slot[0].pid = getpid(); /* worker 1 is not running */
	n = metrics_render_process(m, getpid(), out, 0, sizeof(out));
	out[n] = '\0';
	assert_non_null(strstr(out, "# TYPE process_resident_memory_bytes "
				    "gauge\n"));
	assert_non_null(strstr(out, "# TYPE process_cpu_seconds_total "
				    "counter\n"));
	assert_non_null(
	    strstr(out, "process_open_fds{worker=\"supervisor\"} "));
	assert_non_null(strstr(out, "process_max_fds{worker=\"0\"} "));
	assert_null(strstr(out, "worker=\"1\""));
	assert_non_null(strstr(out, "process_start_time_seconds{worker="));
	/* a full buffer is cut at a line end */
	n = metrics_render_process(m, getpid(), out, 0, 200);
	assert_true(n < 200);
	assert_true(n == 0 || out[n - 1] == '\n');
	metrics_unmap(m);
}

static void
test_history(void **state)
{
	struct metrics *m = metrics_map(1);
	struct metrics_sample *h = calloc(METRICS_HISTORY, sizeof(*h));
	int i, n;

	(void)state;
	assert_non_null(m);
	assert_int_equal(metrics_history(m, h), 0);
	metrics_add(&m->slot[0], M_MSG_IN, 5);
	metrics_set(&m->slot[0], M_CONNECTIONS, 3);
	metrics_sample_now(m, 1000);
	n = metrics_history(m, h);
	assert_int_equal(n, 1);
	assert_int_equal(h[0].ts_ms, 1000);
	assert_int_equal(h[0].connections, 3);
	assert_int_equal(h[0].msg_in, 5);
	for (i = 1; i <= METRICS_HISTORY + 40; i++)
		metrics_sample_now(m, 1000 + i);
	n = metrics_history(m, h);
	assert_int_equal(n, METRICS_HISTORY);
	for (i = 1; i < n; i++)
		assert_int_equal(h[i].ts_ms, h[i - 1].ts_ms + 1);
	assert_int_equal(h[n - 1].ts_ms, 1000 + METRICS_HISTORY + 40);
	free(h);
	metrics_unmap(m);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_proc_read),
	    cmocka_unit_test(test_render_process),
	    cmocka_unit_test(test_history),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
