/*
 * proxyproto.c - the PROXY protocol header (v1 text, v2 binary) that a load
 * balancer in --trusted-proxies may put before a device's TLS or HTTP
 * bytes (HAProxy send-proxy/send-proxy-v2, nginx stream proxy_protocol,
 * AWS NLB); docs/protocol.md "Behind a proxy".
 *
 * Design: lws accepts as usual and asks the device protocol about every
 * new socket (LWS_CALLBACK_FILTER_NETWORK_CONNECTION, with the peer's
 * address, before anything is read). A peer outside --trusted-proxies is
 * left to lws untouched: the single-host path is unchanged, and a PROXY
 * header from such a peer reaches TLS or the HTTP parser as garbage and
 * the connection is closed. For a trusted peer we keep a dup() of the
 * socket and deny it (lws closes its own descriptor only), read the header
 * here on the worker's libev loop without ever reading past it (the bytes
 * behind it belong to TLS or HTTP: peek, consume only what the parser
 * calls a prefix, then exactly the header's length, TLVs skipped), then
 * give the socket back to lws with lws_adopt_socket_vhost(). The address
 * the header names is kept per descriptor, written for every connection
 * from a trusted peer just before its adoption, so a reused descriptor
 * never shows an older connection's address. A connection that sends a
 * malformed header, closes, or has not finished it within
 * --handshake-timeout is closed and counted (hub_proxy_headers_total).
 * No lws patch is needed for any of this.
 *
 * Threads: ONLY the worker's service thread (the libev loop lws runs on).
 */
#include "hub_int.h"
#include "hub_log.h"
#include "proto.h"

#include <ev.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct pp_conn {
	ev_io io;
	ev_timer timer;
	struct hub_proxyproto *pp;
	struct lws_vhost *vh;
	struct pp_conn *next, **prev;
	int fd;
	int parsed;  /* the header is complete: adopt once skip is 0 */
	size_t have; /* header bytes consumed into buf */
	size_t skip; /* v2 bytes after the addresses still to consume */
	char peer[REGISTRY_ADDR_MAX];
	char addr[REGISTRY_ADDR_MAX]; /* the client the header names, or "" */
	unsigned char buf[PROTO_PROXY_PEEK_MAX];
};

struct hub_proxyproto {
	struct worker *w;
	struct ev_loop *loop;
	struct pp_conn *conns; /* reading a header now */
	/* by descriptor: the address the adopted connection's header named,
	 * "" for none; grown on demand up to the highest fd seen */
	char (*addr)[REGISTRY_ADDR_MAX];
	size_t cap;
};

struct hub_proxyproto *
hub__proxyproto_new(struct worker *w, struct ev_loop *loop)
{
	struct hub_proxyproto *pp = calloc(1, sizeof(*pp));

	if (!pp)
		return NULL;
	pp->w = w;
	pp->loop = loop;
	return pp;
}

static void
conn_free(struct pp_conn *c)
{
	ev_io_stop(c->pp->loop, &c->io);
	ev_timer_stop(c->pp->loop, &c->timer);
	*c->prev = c->next;
	if (c->next)
		c->next->prev = c->prev;
	free(c);
}

void
hub__proxyproto_free(struct hub_proxyproto *pp)
{
	if (!pp)
		return;
	while (pp->conns) {
		int fd = pp->conns->fd;

		conn_free(pp->conns);
		close(fd);
	}
	free(pp->addr);
	free(pp);
}

static int
table_set(struct hub_proxyproto *pp, int fd, const char *addr)
{
	size_t n;

	if (fd < 0)
		return HUB_ERR_INVAL;
	if ((size_t)fd >= pp->cap) {
		char(*t)[REGISTRY_ADDR_MAX];

		n = pp->cap ? pp->cap : 256;
		while (n <= (size_t)fd)
			n *= 2;
		t = realloc(pp->addr, n * sizeof(*t));
		if (!t)
			return HUB_ERR_NOMEM;
		memset(t + pp->cap, 0, (n - pp->cap) * sizeof(*t));
		pp->addr = t;
		pp->cap = n;
	}
	snprintf(pp->addr[fd], sizeof(pp->addr[fd]), "%s", addr);
	return HUB_OK;
}

int
hub__proxyproto_addr(struct worker *w, struct lws *wsi, char *out, size_t cap)
{
	struct hub_proxyproto *pp = w->proxyproto;
	lws_sockfd_type fd;

	HUB_ASSERT_THREAD(&w->service);
	if (!pp || !cap)
		return 0;
	fd = lws_get_socket_fd(wsi);
	if (fd < 0 || (size_t)fd >= pp->cap || !pp->addr[fd][0])
		return 0;
	snprintf(out, cap, "%s", pp->addr[fd]);
	return 1;
}

static void
fail(struct pp_conn *c, enum metric k, const char *why)
{
	struct worker *w = c->pp->w;
	int fd = c->fd;

	metrics_add(w->m, k, 1);
	hub_log(k == M_PROXY_INVALID ? HUB_LOG_WARN : HUB_LOG_DEBUG,
		"HUB-PROXY-BAD", "peer=%s reason=%s", c->peer, why);
	conn_free(c);
	close(fd);
}

static void
adopt(struct pp_conn *c)
{
	struct hub_proxyproto *pp = c->pp;
	struct lws_vhost *vh = c->vh;
	int fd = c->fd;

	/* written for every adoption from a trusted peer, header or not */
	if (table_set(pp, fd, c->addr)) {
		fail(c, M_PROXY_CLOSED, "out_of_memory");
		return;
	}
	if (c->parsed)
		metrics_add(pp->w->m, M_PROXY_OK, 1);
	conn_free(c);
	/* lws closes the socket itself when it cannot take it */
	lws_adopt_socket_vhost(vh, fd);
}

/* One step on a readable socket: 1 to go on, 0 to wait, -1 when c is gone. */
static int
step(struct pp_conn *c)
{
	unsigned char scratch[512];
	struct proto_proxy h;
	ssize_t n, got;
	size_t take;
	int rc;

	if (c->skip) {
		take = c->skip < sizeof(scratch) ? c->skip : sizeof(scratch);
		n = recv(c->fd, scratch, take, 0);
		if (n > 0) {
			c->skip -= (size_t)n;
			return 1;
		}
		goto ioerr;
	}
	if (c->parsed) {
		adopt(c);
		return -1;
	}
	n = recv(c->fd, c->buf + c->have, sizeof(c->buf) - c->have, MSG_PEEK);
	if (n <= 0)
		goto ioerr;
	rc = proto_proxy_parse(c->buf, c->have + (size_t)n, &h);
	if (rc == HUB_ERR_NOTFOUND && c->have == 0) {
		adopt(c); /* no header: the proxy forwards HTTP (X-Forwarded) */
		return -1;
	}
	if (rc == HUB_ERR_BUSY) {
		/* all of it header bytes: consume them, wait for the rest (a
		 * lone "P" is taken for "PROXY ": an HTTP proxy's "PUT" that
		 * arrives one byte first is then refused; GET is the only
		 * method the device port serves) */
		take = (size_t)n;
	} else if (rc == HUB_OK && h.header_len >= c->have) {
		take = h.header_len - c->have;
		if (take > (size_t)n)
			take = (size_t)n;
	} else {
		fail(c, M_PROXY_INVALID, "malformed");
		return -1;
	}
	got = recv(c->fd, c->buf + c->have, take, 0);
	if (got != (ssize_t)take) { /* peeked bytes cannot vanish */
		fail(c, M_PROXY_CLOSED, "read_failed");
		return -1;
	}
	c->have += take;
	if (rc == HUB_OK) {
		c->parsed = 1;
		c->skip = h.header_len - c->have;
		if (h.command == PROTO_PROXY_PROXY)
			proto_proxy_addr(&h, c->addr, sizeof(c->addr));
		return 1;
	}
	if (c->have < sizeof(c->buf))
		return 1;
	fail(c, M_PROXY_INVALID, "too_long"); /* the parser says INVAL first */
	return -1;
ioerr:
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return 0;
	if (n < 0 && errno == EINTR)
		return 1;
	fail(c, M_PROXY_CLOSED, n ? "read_failed" : "closed");
	return -1;
}

static void
on_readable(struct ev_loop *loop, ev_io *io, int revents)
{
	(void)loop;
	(void)revents;
	while (step(io->data) > 0)
		;
}

static void
on_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
	(void)loop;
	(void)revents;
	fail(t->data, M_PROXY_TIMEOUT, "timeout");
}

int
hub__proxyproto_filter(struct worker *w, struct lws *listener,
		       const struct lws_filter_network_conn_args *filt)
{
	struct hub_proxyproto *pp = w->proxyproto;
	const struct sockaddr_in *s4 = (const void *)&filt->cli_addr;
	const struct sockaddr_in6 *s6 = (const void *)&filt->cli_addr;
	char peer[REGISTRY_ADDR_MAX];
	struct pp_conn *c;
	int fd;

	HUB_ASSERT_THREAD(&w->service);
	if (!pp)
		return 0;
	if (filt->cli_addr.ss_family == AF_INET)
		inet_ntop(AF_INET, &s4->sin_addr, peer, sizeof(peer));
	else if (filt->cli_addr.ss_family == AF_INET6)
		inet_ntop(AF_INET6, &s6->sin6_addr, peer, sizeof(peer));
	else
		return 0;
	if (!proto_cidrs_match(w->proxies, w->nproxies, peer, strlen(peer)))
		return 0; /* lws carries on: no header is honoured */
	c = calloc(1, sizeof(*c));
	/* the dup shares the socket (and its O_NONBLOCK): lws closes only
	 * its own descriptor when we deny the connection */
	fd = c ? fcntl(filt->accept_fd, F_DUPFD_CLOEXEC, 0) : -1;
	if (fd < 0) {
		free(c);
		return 1;
	}
	c->pp = pp;
	c->vh = lws_get_vhost(listener);
	c->fd = fd;
	memcpy(c->peer, peer, sizeof(c->peer));
	c->next = pp->conns;
	c->prev = &pp->conns;
	if (pp->conns)
		pp->conns->prev = &c->next;
	pp->conns = c;
	ev_io_init(&c->io, on_readable, fd, EV_READ);
	c->io.data = c;
	ev_timer_init(&c->timer, on_timeout,
		      (ev_tstamp)w->conf->handshake_timeout, 0.);
	c->timer.data = c;
	ev_io_start(pp->loop, &c->io);
	ev_timer_start(pp->loop, &c->timer);
	return 1;
}
