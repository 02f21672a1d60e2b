/*
 * tls.h - hubd's TLS: the check that --tls-cert and --tls-key belong
 * together (hub__tls_pair_ok), and session tickets: one ticket context per
 * worker whose keys every worker (and every hub given the same --ticket-key
 * file) derives from one secret, so a device resumes on any worker and any
 * hub.
 *
 * Keys: for each period of HUB_TLS_TICKET_PERIOD seconds since the epoch,
 *   key  = HMAC-SHA256(secret, "hub ticket key"  || period as 8 bytes BE)
 *   name = HMAC-SHA256(secret, "hub ticket name" || period)[0..3]
 * (AES-256-GCM). A worker holds the current period's key (new tickets) and
 * the previous one (tickets issued before the last rotation), so a ticket is
 * accepted for HUB_TLS_TICKET_LIFETIME seconds after it was issued (its
 * lifetime hint), and a key is gone at most two periods after it was first
 * used. Hubs that share a file need clocks within a few minutes.
 *
 * Threads: hub_tls_new/tick/free on the worker's service thread; the ticket
 * context is used by mbedTLS on the same thread and locks itself
 * (MBEDTLS_THREADING_C).
 */
#ifndef HUB_TLS_H
#define HUB_TLS_H

#include <stddef.h>
#include <stdint.h>

#define HUB_TLS_TICKET_PERIOD (6 * 3600)
/* the period plus 5 minutes: mbedTLS replaces a key older than its lifetime
 * with a random one at the next handshake, so ours must rotate first */
#define HUB_TLS_TICKET_LIFETIME (HUB_TLS_TICKET_PERIOD + 300)
#define HUB_TLS_TICKET_NAME_LEN 4
#define HUB_TLS_TICKET_KEY_LEN 32

struct hub_tls;

/*
 * Derives the ticket key and name of a period from a secret (pure; any
 * thread). HUB_OK or HUB_ERR_TLS.
 */
int hub_tls_ticket_key(const unsigned char *secret, size_t secret_len,
		       uint64_t period,
		       unsigned char key[HUB_TLS_TICKET_KEY_LEN],
		       unsigned char name[HUB_TLS_TICKET_NAME_LEN]);

/*
 * A ticket context keyed for time `now` (seconds since the epoch) and
 * installed for every server TLS connection of this process (our lws
 * patch). HUB_OK and *out, or HUB_ERR_NOMEM / HUB_ERR_TLS with *out NULL.
 * The secret is copied. Free with hub_tls_free() after the lws context.
 */
int hub_tls_new(const unsigned char *secret, size_t secret_len, int64_t now,
		struct hub_tls **out);
/* Rotates the keys when `now` entered a new period; cheap otherwise. */
int hub_tls_tick(struct hub_tls *t, int64_t now);
/* The period whose key issues tickets now. */
uint64_t hub_tls_period(const struct hub_tls *t);
/* Uninstalls and frees; NULL is fine. */
void hub_tls_free(struct hub_tls *t);

/* 0 if the PEM certificate and key parse and belong together, else an
 * mbedTLS code and why (cap bytes). Any thread: the supervisor at start,
 * a worker on SIGHUP. */
int hub__tls_pair_ok(const char *cert, const char *key, char *why, size_t cap);

#endif
