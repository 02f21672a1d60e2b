/*
 * recvfloor.c - design E: the receive-side floor. A forked feeder process
 * writes 80-byte messages over loopback TCP (TCP_NODELAY, one write each,
 * one every 1/RATE s, timer slack 1 ns); the parent waits in epoll_wait
 * (level-triggered) and does exactly one recv(fd, buf, 80) per wake-up,
 * as an event loop that reads one frame per POLLIN does. Prints the
 * parent's CPU (getrusage RUSAGE_SELF) per message.
 *
 * usage: recvfloor RATE SECS [tcp|unix]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MSG 80

static uint64_t
now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void
feeder(int fd, uint64_t rate, uint64_t total)
{
	char m[MSG];
	uint64_t t0, i;

	prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
	memset(m, 'y', sizeof(m));
	t0 = now_ns() + 100000000ull;
	for (i = 0; i < total; i++) {
		uint64_t due = t0 + i * 1000000000ull / rate;
		struct timespec ts = {.tv_sec = (time_t)(due / 1000000000ull),
				      .tv_nsec = (long)(due % 1000000000ull)};
		size_t off = 0;

		if (now_ns() < due)
			while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME,
					       &ts, NULL) == EINTR)
				;
		while (off < MSG) {
			ssize_t w = write(fd, m + off, MSG - off);
			if (w <= 0)
				_exit(1);
			off += (size_t)w;
		}
	}
	_exit(0);
}

static double
tv_us(struct timeval tv)
{
	return tv.tv_sec * 1e6 + tv.tv_usec;
}

int
main(int argc, char **argv)
{
	uint64_t rate, secs, total, got = 0, recvs = 0, wakes = 0, bytes = 0;
	int use_unix, fd, pfd, ep, one = 1, started = 0;
	struct epoll_event ev = {.events = EPOLLIN};
	struct rusage r0, r1;
	char buf[MSG];
	pid_t pid;
	double cpu;

	if (argc < 3) {
		fprintf(stderr, "usage: %s RATE SECS [tcp|unix]\n", argv[0]);
		return 2;
	}
	rate = strtoull(argv[1], NULL, 10);
	secs = strtoull(argv[2], NULL, 10);
	use_unix = argc > 3 && strcmp(argv[3], "unix") == 0;
	total = rate * secs;
	if (use_unix) {
		int sv[2];
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
			return 1;
		fd = sv[0], pfd = sv[1];
	} else {
		struct sockaddr_in sa = {.sin_family = AF_INET,
					 .sin_addr.s_addr = htonl(0x7f000001)};
		socklen_t sl = sizeof(sa);
		int l = socket(AF_INET, SOCK_STREAM, 0);

		if (l < 0 || bind(l, (void *)&sa, sizeof(sa)) != 0 ||
		    listen(l, 1) != 0 || getsockname(l, (void *)&sa, &sl) != 0)
			return 1;
		pfd = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(pfd, (void *)&sa, sizeof(sa)) != 0)
			return 1;
		setsockopt(pfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		fd = accept(l, NULL, NULL);
		close(l);
		if (fd < 0)
			return 1;
	}
	pid = fork();
	if (pid == 0) {
		close(fd);
		feeder(pfd, rate, total);
	}
	close(pfd);
	ep = epoll_create1(0);
	ev.data.fd = fd;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
		return 1;
	/* the clock starts with the first byte: the first wake is counted */
	getrusage(RUSAGE_SELF, &r0);
	for (;;) {
		struct epoll_event out;
		ssize_t n;

		if (epoll_wait(ep, &out, 1, 5000) <= 0)
			break;
		wakes++;
		n = recv(fd, buf, MSG, 0);
		recvs++;
		if (n <= 0)
			break;
		if (!started)
			started = 1;
		bytes += (uint64_t)n;
		got = bytes / MSG;
		if (got >= total)
			break;
	}
	getrusage(RUSAGE_SELF, &r1);
	cpu = tv_us(r1.ru_utime) - tv_us(r0.ru_utime) + tv_us(r1.ru_stime) -
	      tv_us(r0.ru_stime);
	printf("mode=recv-%s rate=%lu secs=%lu msgs=%lu got=%lu recvs=%lu "
	       "wakes_per_msg=%.3f vcsw_per_msg=%.3f utime_s=%.3f stime_s=%.3f "
	       "cpu_us_per_msg=%.2f\n",
	       use_unix ? "unix" : "tcp", (unsigned long)rate,
	       (unsigned long)secs, (unsigned long)total, (unsigned long)got,
	       (unsigned long)recvs, (double)wakes / (double)total,
	       (double)(r1.ru_nvcsw - r0.ru_nvcsw) / (double)total,
	       (tv_us(r1.ru_utime) - tv_us(r0.ru_utime)) / 1e6,
	       (tv_us(r1.ru_stime) - tv_us(r0.ru_stime)) / 1e6,
	       cpu / (double)total);
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	return 0;
}
