/*
 * registry_query.h - read-only queries of the registry for the ops
 * listener's JSON API and status page: paged, filtered device lists, one
 * device, the event log paged by seq, and counts.
 *
 * A struct registry_query is its own SQLite connection opened read-only
 * (SQLITE_OPEN_READONLY: it never creates the file, never migrates, never
 * takes a write lock), so it can run on a thread of its own beside the
 * registry writer. One thread at a time per struct (hubd: the ops reader
 * thread of http.c). Returns enum hub_err codes; never logs.
 */
#ifndef REGISTRY_QUERY_H
#define REGISTRY_QUERY_H

#include <stddef.h>
#include <stdint.h>

#include "registry.h"

struct registry_query;

/*
 * Opens path read-only. HUB_ERR_NOTFOUND if there is no such file,
 * HUB_ERR_SCHEMA if its schema is not the one this binary knows. On failure
 * *out is NULL and err says why.
 */
int registry_query_open(const char *path, struct registry_query **out,
			char *err, size_t errlen);
/* Accepts NULL. */
void registry_query_close(struct registry_query *q);

/* At most this many of a device's groups are listed (the first by name). */
#define REGISTRY_QUERY_GROUPS 16

/* A device as the API shows it. */
struct registry_query_device {
	struct registry_device d; /* id, name, disabled, online, last_seen,
				     created, session, hub, addr */
	int64_t since; /* online: when the open session started; else 0 */
	/*
	 * Its groups (device_groups, hubctl group add), the first
	 * REGISTRY_QUERY_GROUPS by name in name order; ngroups of them are
	 * set, groups_total counts all (groups_total > ngroups: truncated).
	 * Groups carried only in a signed token are not in the registry.
	 */
	char groups[REGISTRY_QUERY_GROUPS][REGISTRY_GROUP_MAX + 1];
	int ngroups;
	int64_t groups_total;
};

struct registry_query_filter {
	int online;	   /* -1 any, 0 offline only, 1 online only */
	const char *q;	   /* substring of id or name (case-insensitive), or
			      NULL */
	const char *after; /* ids after this one (paging), or NULL */
	int limit;	   /* rows, 1..1000 */
};

/*
 * Devices matching f in id order, with their groups (one statement per
 * page); cb for each. *more is set to 1 when more
 * rows follow the last one given (the next page starts after its id).
 */
int registry_query_devices(struct registry_query *q,
			   const struct registry_query_filter *f,
			   void (*cb)(void *arg,
				      const struct registry_query_device *d),
			   void *arg, int *more);
/* One device; HUB_ERR_NOTFOUND if unknown. */
int registry_query_device(struct registry_query *q, const char *id,
			  struct registry_query_device *out);
/*
 * Events newest first: of device (NULL: all), with seq < before (0: no
 * bound), at most limit (1..1000). *more as above.
 */
int registry_query_events(struct registry_query *q, const char *device,
			  int64_t before, int limit,
			  void (*cb)(void *arg, const struct registry_event *e),
			  void *arg, int *more);
/* Device count, and of them online. */
int registry_query_counts(struct registry_query *q, int64_t *devices,
			  int64_t *online);

#endif
