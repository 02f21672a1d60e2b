/*
 * conf.h - hubd's configuration: defaults, INI file (libinih), then flags.
 *
 * INI keys are the flag names without dashes (docs/operations.md);
 * flags win over the file. Parsed once by the supervisor before the workers
 * fork; read-only afterwards, so every thread may read it.
 */
#ifndef CONF_H
#define CONF_H

#include <stddef.h>

#define CONF_PROXIES_MAX 32 /* --trusted-proxies entries */

/*
 * --bridge-window default: messages a worker's bridge hands to Paho before
 * waiting for completions. Paho 1.3 (Debian's build) pays per message for
 * everything it holds: each of its allocations goes into its heap-tracking
 * tree (a search and an insert under one mutex), and each message id is
 * found by walking its command, in-flight and response lists. perf on the
 * workers under QoS 1 load: 17 % of their samples in that tree at 1000,
 * 8 % at 20 (where context switches take its place).
 * Measured (the tools/bench messages setup: 1000 ws devices offering 25k
 * QoS 1 msgs/s, loopback mosquitto, 2 workers, 2 cores shared with other
 * work; acked/s, 6 runs each, interleaved): 20 -> 16498, 16872, 13850,
 * 13719, 8644, 13517 (mean 13.9k); 1000 -> 9398, 7929, 14775, 12806,
 * 12986, 8251 (mean 11.0k). 20 led in 4 of the 6 pairs, within this box's
 * noise: no clear gain, so 1000 stays; far larger is clearly slower (one
 * run each, busier box: 10000 -> 2855, 65535 -> 2433, 1000 -> 7202). A
 * worker sends at most window / broker round trip per second: raise it
 * for a distant broker, never past a few thousand.
 */
#define CONF_BRIDGE_WINDOW 1000

struct conf {
	char listen_host[128];
	int listen_port;
	char tls_cert[512], tls_key[512], device_ca[512];
	int no_tls;
	/* --ticket-key FILE, else empty; the TLS session-ticket secret: the
	 * file's bytes, or 32 random bytes drawn by conf_load() in the
	 * supervisor, so every worker (forked later) derives the same keys */
	char ticket_key[512];
	/* --token-key FILE[,FILE]: public keys of signed fleet tokens */
	char token_key[1024];
	unsigned char ticket_secret[1024];
	size_t ticket_secret_len;
	char db[512];
	char broker[512], broker_user[128], broker_password[256];
	int mqtt_version;
	char hub_id[64];
	int workers; /* 0: derived from max_conns and cores */
	int max_conns;
	char prefix[64];
	char group_prefix[64], fleet_prefix[64]; /* group/fleet commands */
	char http_host[128];
	int http_port;
	int heartbeat, idle_timeout;
	int max_frame;
	int rate;
	int rate_bytes; /* per device per second; burst >= max_frame */
	int inflight;
	int auth_fail_limit;
	int drain;
	int max_pending_per_addr;   /* unauthenticated connections */
	int handshake_timeout;	    /* s, TLS + upgrade */
	int events_retention;	    /* days */
	char trusted_proxies[512];  /* CIDR list; "": none */
	char allowed_origins[1024]; /* Origin list; "": any */
	int log_level;		    /* 0 err .. 3 debug */
	size_t bridge_buffer; /* device QoS 1 messages held while broker away */
	int bridge_window;    /* sends in flight to the broker, per worker */
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
