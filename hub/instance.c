/*
 * instance.c - one hubd per device listener, per ops listener, and per
 * registry + hub id.
 *
 * Each of the three is a claim: an abstract unix socket (Linux, no file to
 * clean up) named after it, bound and listening in the supervisor. The
 * kernel makes the bind atomic and releases the name when the last process
 * holding the socket exits - the workers inherit it, so an instance whose
 * supervisor died still holds its names until its workers have drained.
 * A second hubd fails to bind the name, connects to it instead and reads
 * the holder's pid with SO_PEERCRED.
 *
 * The listeners are also test-bound without SO_REUSEPORT: a socket that
 * anything else (another program, a hubd of an older version) listens on
 * with or without SO_REUSEPORT refuses that bind, where the workers' own
 * SO_REUSEPORT sockets would silently share the port. The holder's pid is
 * looked up in /proc (its listening socket's inode) where permitted.
 *
 * Threads: the supervisor's only thread, before the workers fork.
 */
#include "hub_int.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* The pid of whatever listens on the abstract name (0 if unknown). */
static pid_t
holder_of(const struct sockaddr_un *a, socklen_t al)
{
	struct ucred cr;
	socklen_t cl = sizeof(cr);
	pid_t pid = 0;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return 0;
	if (!connect(fd, (const struct sockaddr *)a, al) &&
	    !getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl))
		pid = cr.pid;
	close(fd);
	return pid;
}

/* Binds "\0hubd/<key>"; the fd, or -1 with *holder set. */
static int
claim(const char *key, pid_t *holder)
{
	struct sockaddr_un a;
	socklen_t al;
	size_t kl = strlen(key);
	int fd;

	*holder = 0;
	memset(&a, 0, sizeof(a));
	a.sun_family = AF_UNIX;
	if (kl + 6 > sizeof(a.sun_path))
		kl = sizeof(a.sun_path) - 6;
	memcpy(a.sun_path + 1, "hubd/", 5);
	memcpy(a.sun_path + 6, key, kl);
	al = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 6 + kl);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (bind(fd, (struct sockaddr *)&a, al) || listen(fd, 4)) {
		int e = errno;

		close(fd);
		if (e == EADDRINUSE)
			*holder = holder_of(&a, al);
		errno = e;
		return -1;
	}
	return fd;
}

/* The pid of the process with a socket of this inode (0 if unknown). */
static pid_t
pid_of_inode(unsigned long inode)
{
	char want[48], path[300], link[64];
	struct dirent *d;
	pid_t found = 0;
	DIR *proc;

	snprintf(want, sizeof(want), "socket:[%lu]", inode);
	proc = opendir("/proc");
	if (!proc)
		return 0;
	while (!found && (d = readdir(proc))) {
		struct dirent *f;
		DIR *fds;
		char *end;
		long pid = strtol(d->d_name, &end, 10);

		if (*end || pid <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%ld/fd", pid);
		fds = opendir(path);
		if (!fds)
			continue;
		while ((f = readdir(fds))) {
			ssize_t n;

			snprintf(path, sizeof(path), "/proc/%ld/fd/%s", pid,
				 f->d_name);
			n = readlink(path, link, sizeof(link) - 1);
			if (n <= 0)
				continue;
			link[n] = '\0';
			if (!strcmp(link, want)) {
				found = (pid_t)pid;
				break;
			}
		}
		closedir(fds);
	}
	closedir(proc);
	return found;
}

/* The pid listening on TCP port `port` (IPv4, any address), or 0. */
static pid_t
tcp_listener_pid(int port)
{
	char line[512];
	FILE *f = fopen("/proc/net/tcp", "r");
	pid_t pid = 0;

	if (!f)
		return 0;
	if (!fgets(line, sizeof(line), f)) { /* header */
		fclose(f);
		return 0;
	}
	while (!pid && fgets(line, sizeof(line), f)) {
		unsigned lport, st;
		unsigned long inode;
		char local[64], rem[64];

		if (sscanf(line, " %*d: %63s %63s %x %*s %*s %*s %*s %*s %lu",
			   local, rem, &st, &inode) != 4)
			continue;
		if (st != 0x0A || !strchr(local, ':'))
			continue;
		lport = (unsigned)strtoul(strchr(local, ':') + 1, NULL, 16);
		if ((int)lport == port && inode)
			pid = pid_of_inode(inode);
	}
	fclose(f);
	return pid;
}

static uint64_t
fnv1a64(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	while (*s) {
		h ^= (unsigned char)*s++;
		h *= 1099511628211ull;
	}
	return h;
}

/* Can this address be bound by a socket that shares nothing? */
static int
bind_check(const char *what, const char *host, int port, char *err,
	   size_t errlen)
{
	struct sockaddr_in a;
	int fd, one = 1, rc = HUB_OK;

	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, host, &a.sin_addr) != 1)
		return HUB_OK; /* an interface name: lws resolves it */
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "%s: socket: %s", what, strerror(errno));
		return HUB_ERR_IO;
	}
	/* TIME_WAIT from a previous run is no owner */
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&a, sizeof(a))) {
		int e = errno;
		pid_t pid = e == EADDRINUSE ? tcp_listener_pid(port) : 0;

		if (pid)
			snprintf(err, errlen,
				 "%s %s:%d is in use by pid %d (another hubd "
				 "or program)",
				 what, host, port, (int)pid);
		else
			snprintf(err, errlen, "%s %s:%d: %s", what, host, port,
				 strerror(e));
		rc = HUB_ERR_EXISTS;
	}
	close(fd);
	return rc;
}

int
hub__instance_claim(const struct conf *c, struct hub_instance *in, char *err,
		    size_t errlen)
{
	char key[160], what[PATH_MAX + 160], real[PATH_MAX];
	const char *db = c->db;
	pid_t holder;
	int rc;

	in->fd_listen = in->fd_http = in->fd_db = -1;
	snprintf(key, sizeof(key), "listen/%s:%d", c->listen_host,
		 c->listen_port);
	snprintf(what, sizeof(what), "--listen %s:%d", c->listen_host,
		 c->listen_port);
	in->fd_listen = claim(key, &holder);
	if (in->fd_listen < 0)
		goto taken;
	snprintf(key, sizeof(key), "http/%s:%d", c->http_host, c->http_port);
	snprintf(what, sizeof(what), "--http %s:%d", c->http_host,
		 c->http_port);
	in->fd_http = claim(key, &holder);
	if (in->fd_http < 0)
		goto taken;
	if (strcmp(db, ":memory:")) {
		if (realpath(db, real))
			db = real;
		/* the path may be long: a 64-bit hash names it */
		snprintf(key, sizeof(key), "db/%016llx/%s",
			 (unsigned long long)fnv1a64(db), c->hub_id);
		snprintf(what, sizeof(what), "--db %s and --hub-id %s", db,
			 c->hub_id);
		in->fd_db = claim(key, &holder);
		if (in->fd_db < 0)
			goto taken;
	}
	rc = bind_check("device listener", c->listen_host, c->listen_port, err,
			errlen);
	if (rc == HUB_OK)
		rc = bind_check("ops listener", c->http_host, c->http_port, err,
				errlen);
	if (rc != HUB_OK)
		hub__instance_release(in);
	return rc;
taken:
	if (errno == EADDRINUSE) {
		char pid[32] = "";

		if (holder)
			snprintf(pid, sizeof(pid), " (pid %d)", (int)holder);
		snprintf(err, errlen, "another hubd%s already runs with %s",
			 pid, what);
		rc = HUB_ERR_EXISTS;
	} else {
		snprintf(err, errlen, "instance claim %s: %s", key,
			 strerror(errno));
		rc = HUB_ERR_IO;
	}
	hub__instance_release(in);
	return rc;
}

void
hub__instance_release(struct hub_instance *in)
{
	if (in->fd_listen >= 0)
		close(in->fd_listen);
	if (in->fd_http >= 0)
		close(in->fd_http);
	if (in->fd_db >= 0)
		close(in->fd_db);
	in->fd_listen = in->fd_http = in->fd_db = -1;
}
