/*
 * conf.h - hubd's configuration: defaults, INI file (libinih), then flags.
 *
 * INI keys are the flag names without dashes (DESIGN.md "Interfaces");
 * flags win over the file. Parsed once by the supervisor before the workers
 * fork; read-only afterwards, so every thread may read it.
 */
#ifndef CONF_H
#define CONF_H

#include <stddef.h>

struct conf {
	char listen_host[128];
	int listen_port;
	char tls_cert[512], tls_key[512], device_ca[512];
	int no_tls;
	char db[512];
	char broker[512], broker_user[128], broker_password[256];
	int mqtt_version;
	char hub_id[64];
	int workers; /* 0: derived from max_conns and cores */
	int max_conns;
	char prefix[64];
	char http_host[128];
	int http_port;
	int heartbeat, idle_timeout;
	int max_frame;
	int rate;
	int inflight;
	int auth_fail_limit;
	int drain;
	int log_level;	      /* 0 err .. 3 debug */
	size_t bridge_buffer; /* device QoS 1 messages held while broker away */
	char http_token[512]; /* file with the ops listener's bearer token */
};

/*
 * Fills c from defaults, the --config file, then argv. HUB_OK, or
 * HUB_ERR_INVAL with a one-line reason in err (exit 2), or HUB_ERR_EXISTS
 * for --help (usage printed by the caller).
 */
int conf_load(struct conf *c, int argc, char **argv, char *err, size_t errlen);
/* Usage text for --help and errors. */
const char *conf_usage(void);
/* The worker count: --workers, else enough for max_conns, >= cores. */
int conf_workers(const struct conf *c, long fd_limit, long cores);

#endif
