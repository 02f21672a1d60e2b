/* hub_log.c - one write(2) per line; see hub_log.h. */
#include "hub_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum hub_log_level log_level = HUB_LOG_INFO;
static char log_tag[16];

void
hub_log_set_level(enum hub_log_level lvl)
{
	log_level = lvl;
}

void
hub_log_set_tag(const char *tag)
{
	snprintf(log_tag, sizeof(log_tag), "%s", tag ? tag : "");
}

static void
log_line(enum hub_log_level lvl, const char *id, const char *fmt, va_list ap)
{
	static const char *names[] = {"ERR", "WARN", "INFO", "DEBUG"};
	char buf[1024];
	struct timespec ts;
	struct tm tm;
	size_t n;
	int r;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
	r = snprintf(buf + n, sizeof(buf) - n, ".%03ldZ %s%s%s %s ",
		     ts.tv_nsec / 1000000, log_tag[0] ? log_tag : "",
		     log_tag[0] ? " " : "", names[lvl], id);
	if (r > 0)
		n += (size_t)r < sizeof(buf) - n ? (size_t)r
						 : sizeof(buf) - n - 1;
	r = vsnprintf(buf + n, sizeof(buf) - n, fmt, ap);
	if (r > 0)
		n += (size_t)r < sizeof(buf) - n ? (size_t)r
						 : sizeof(buf) - n - 1;
	while (n && buf[n - 1] == '\n')
		n--;
	buf[n++] = '\n';
	if (write(STDERR_FILENO, buf, n) < 0)
		return;
}

void
hub_log(enum hub_log_level lvl, const char *id, const char *fmt, ...)
{
	va_list ap;

	if (lvl > log_level)
		return;
	va_start(ap, fmt);
	log_line(lvl, id, fmt, ap);
	va_end(ap);
}

static void
log_lws_line(enum hub_log_level lvl, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_line(lvl, "LWS", fmt, ap);
	va_end(ap);
}

void
hub_log_lws(int level, const char *line)
{
	/* lws levels: 1 err, 2 warn, 4 notice, 8 info ... */
	enum hub_log_level lvl = level & 1   ? HUB_LOG_ERR
				 : level & 2 ? HUB_LOG_WARN
				 : level & 4 ? HUB_LOG_INFO
					     : HUB_LOG_DEBUG;
	if (lvl > log_level)
		return;
	log_lws_line(lvl, "%s", line);
}
