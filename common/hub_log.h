/*
 * hub_log.h - thread-safe logging for the daemon and tools.
 *
 * Libraries do not log; hubd and the tools do, through this one function.
 * Each line is formatted on the caller's stack and written with a single
 * write(2), so lines from different threads never interleave (lwsl_* uses a
 * static buffer and is not thread-safe in a default lws build; lws's own
 * log output is routed here by hub_log_lws()).
 *
 * Every line carries a stable id ("HUB-AUTH-FAIL") so logs are greppable.
 */
#ifndef HUB_LOG_H
#define HUB_LOG_H

enum hub_log_level { HUB_LOG_ERR, HUB_LOG_WARN, HUB_LOG_INFO, HUB_LOG_DEBUG };

/* Lines above this level are dropped. Set once at start-up. */
void hub_log_set_level(enum hub_log_level lvl);
/* A tag such as "w0" printed on every line (worker index). */
void hub_log_set_tag(const char *tag);

void hub_log(enum hub_log_level lvl, const char *id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Emitter to hand to lws_set_log_level(); routes lws's lines here. */
void hub_log_lws(int level, const char *line);

#endif
