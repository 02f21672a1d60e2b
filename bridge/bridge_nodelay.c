/*
 * bridge_nodelay.c - TCP_NODELAY on Paho's socket.
 *
 * Paho C never sets TCP_NODELAY, so with Nagle's algorithm a PUBLISH
 * written while a previous one is unacknowledged waits for the ACK (40 ms
 * with delayed ACKs on Linux): measured as a 40 ms floor on QoS 1 latency.
 * Paho does not expose its socket, so after each connect the bridge thread
 * scans /proc/self/fd for TCP sockets whose peer is the broker's address
 * and sets the option on them. Another socket of this process connected to
 * the same broker gets it too, which is harmless.
 *
 * bridge__uri_parse is pure; bridge__set_nodelay resolves the host (the
 * bridge thread may block on DNS) and reads /proc. Any thread.
 */
#include "bridge_int.h"

#include <dirent.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int
bridge__uri_parse(const char *uri, char *host, size_t hostlen, unsigned *port,
		  int *tls)
{
	static const struct {
		const char *scheme;
		unsigned port;
		int tls;
	} schemes[] = {
	    {"tcp://", 1883, 0},
	    {"mqtt://", 1883, 0},
	    {"ssl://", 8883, 1},
	    {"mqtts://", 8883, 1},
	};
	const char *h, *end, *colon = NULL;
	size_t i, hl;
	unsigned long p;

	if (!uri || !host || !hostlen || !port || !tls)
		return HUB_ERR_INVAL;
	host[0] = '\0';
	*port = 1883;
	*tls = 0;
	h = uri;
	if (strstr(uri, "://")) {
		for (i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
			size_t sl = strlen(schemes[i].scheme);

			if (strncmp(uri, schemes[i].scheme, sl) == 0) {
				h = uri + sl;
				*port = schemes[i].port;
				*tls = schemes[i].tls;
				break;
			}
		}
		if (h == uri)
			return HUB_ERR_INVAL; /* ws://, wss://, unknown */
	}
	if (*h == '[') {
		end = strchr(h, ']');
		if (!end || end == h + 1)
			return HUB_ERR_INVAL;
		h++;
		hl = (size_t)(end - h);
		if (end[1] == ':')
			colon = end + 1;
		else if (end[1] != '\0')
			return HUB_ERR_INVAL;
	} else {
		colon = strrchr(h, ':');
		hl = colon ? (size_t)(colon - h) : strlen(h);
		if (memchr(h, '/', hl))
			return HUB_ERR_INVAL;
	}
	if (!hl)
		return HUB_ERR_INVAL;
	if (colon) {
		char *ep;
		const char *ps = colon + 1;

		if (*ps < '0' || *ps > '9')
			return HUB_ERR_INVAL;
		p = strtoul(ps, &ep, 10);
		if (*ep != '\0' || p == 0 || p > 65535)
			return HUB_ERR_INVAL;
		*port = (unsigned)p;
	}
	if (hl >= hostlen)
		return HUB_ERR_TOOBIG;
	memcpy(host, h, hl);
	host[hl] = '\0';
	return HUB_OK;
}

static int
same_peer(const struct sockaddr_storage *a, const struct addrinfo *ai)
{
	for (; ai; ai = ai->ai_next) {
		if (ai->ai_family != a->ss_family)
			continue;
		if (a->ss_family == AF_INET) {
			const struct sockaddr_in *x = (const void *)a;
			const struct sockaddr_in *y = (const void *)ai->ai_addr;

			if (x->sin_port == y->sin_port &&
			    x->sin_addr.s_addr == y->sin_addr.s_addr)
				return 1;
		} else if (a->ss_family == AF_INET6) {
			const struct sockaddr_in6 *x = (const void *)a;
			const struct sockaddr_in6 *y =
			    (const void *)ai->ai_addr;

			if (x->sin6_port == y->sin6_port &&
			    !memcmp(&x->sin6_addr, &y->sin6_addr,
				    sizeof(x->sin6_addr)))
				return 1;
		}
	}
	return 0;
}

int
bridge__set_nodelay(const char *uri)
{
	char host[256], portstr[8];
	struct addrinfo hints, *ai = NULL;
	struct dirent *de;
	unsigned port;
	DIR *d = NULL;
	int tls, rc, n = 0, dfd;

	rc = bridge__uri_parse(uri, host, sizeof(host), &port, &tls);
	if (rc != HUB_OK)
		return rc;
	snprintf(portstr, sizeof(portstr), "%u", port);
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	if (getaddrinfo(host, portstr, &hints, &ai) != 0 || !ai)
		return HUB_ERR_BROKER;
	d = opendir("/proc/self/fd");
	if (!d) {
		rc = HUB_ERR_IO;
		goto out;
	}
	dfd = dirfd(d);
	while ((de = readdir(d)) != NULL) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(int), pl = sizeof(ss);
		int fd, type = 0, one = 1;
		char *ep;
		long v;

		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		v = strtol(de->d_name, &ep, 10);
		if (*ep != '\0' || v < 0 || v > 0x7fffffff || v == dfd)
			continue;
		fd = (int)v;
		if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &sl) != 0 ||
		    type != SOCK_STREAM)
			continue;
		if (getpeername(fd, (struct sockaddr *)&ss, &pl) != 0 ||
		    (ss.ss_family != AF_INET && ss.ss_family != AF_INET6))
			continue;
		if (!same_peer(&ss, ai))
			continue;
		if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
			       sizeof(one)) == 0)
			n++;
	}
	rc = n;
out:
	if (d)
		closedir(d);
	freeaddrinfo(ai);
	return rc;
}
