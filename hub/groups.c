/*
 * groups.c - group and fleet commands in hubd (docs/protocol.md, "Group
 * commands"). A session belongs to the groups of its signed token's
 * "groups" claim and of its registry row (hubctl group add), fixed when it
 * starts. The worker counts its live sessions per group and asks the
 * bridge to subscribe "<group-prefix>/<g>/cmd/#" while the count is above
 * zero (GSUB on 0 -> 1, GUNSUB on 1 -> 0); "<fleet-prefix>/cmd/#" the
 * bridge subscribes once per worker. A command that arrives is fanned out
 * to every live member as
 *   {"op":"msg","topic":"cmd/...","group":"g","payload":...,"id":N}
 * with a per-session id when it came with QoS 1 (the device acks it like a
 * direct command). Live only: nothing waits for an offline member.
 *
 * Threads: the worker's service thread only.
 */
#include "hub_int.h"
#include "hub_log.h"
#include "proto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 1 if list ("a,b") holds group g (glen bytes). */
static int
has_group(const char *list, const char *g, size_t glen)
{
	const char *p = list;

	while (*p) {
		const char *e = strchr(p, ',');
		size_t n = e ? (size_t)(e - p) : strlen(p);

		if (n == glen && !memcmp(p, g, n))
			return 1;
		if (!e)
			break;
		p = e + 1;
	}
	return 0;
}

/* Appends g to out ("a,b"), unless present or out is full. 0 or -1. */
static int
add_group(char *out, const char *g, size_t glen)
{
	size_t n = strlen(out);

	if (!glen || has_group(out, g, glen))
		return 0;
	if (n + (n ? 1 : 0) + glen + 1 > HUB_SESS_GROUPS_MAX)
		return -1;
	if (n)
		out[n++] = ',';
	memcpy(out + n, g, glen);
	out[n + glen] = '\0';
	return 0;
}

void
hub__groups_set(char *out, const char (*groups)[65], int n)
{
	int i;

	out[0] = '\0';
	for (i = 0; i < n; i++)
		if (add_group(out, groups[i], strlen(groups[i])))
			hub_log(HUB_LOG_WARN, "HUB-GROUPS-CUT",
				"more groups than a session holds: %s and "
				"later ones ignored",
				groups[i]);
}

void
hub__groups_pending(struct worker *w, const char *id)
{
	size_t len, n;
	const char *g = registry_creds_groups(w->creds, id, &len), *e;

	HUB_ASSERT_THREAD(&w->service);
	if (!w->pending.token_iat)
		w->pending.groups[0] = '\0';
	/* the registry's groups join a signed token's */
	while (g && len) {
		e = memchr(g, ',', len);
		n = e ? (size_t)(e - g) : len;
		if (add_group(w->pending.groups, g, n)) {
			hub_log(HUB_LOG_WARN, "HUB-GROUPS-CUT",
				"device=%s: more groups than a session holds",
				id);
			break;
		}
		if (!e)
			break;
		len -= n + 1;
		g = e + 1;
	}
}

static struct hub_grp *
grp_find(struct worker *w, const char *g, size_t glen)
{
	size_t i;

	for (i = 0; i < w->ngrps; i++)
		if (strlen(w->grps[i].name) == glen &&
		    !memcmp(w->grps[i].name, g, glen))
			return &w->grps[i];
	return NULL;
}

static void
grp_submit(struct worker *w, enum bridge_kind kind, const char *g)
{
	struct bridge_msg *m = bridge_msg_new(kind, g, NULL, NULL, 0);

	if (m && bridge_submit(w->bridge, m) != HUB_OK) {
		bridge_msg_free(m);
		hub_log(HUB_LOG_WARN, "HUB-GROUP-SUB", "group %s: %s lost", g,
			kind == BRIDGE_GSUB ? "subscription"
					    : "unsubscription");
	}
}

/* Calls fn for each group of list. */
static void
each_group(struct worker *w, const char *list,
	   void (*fn)(struct worker *, const char *, size_t))
{
	const char *p = list;

	while (*p) {
		const char *e = strchr(p, ',');
		size_t n = e ? (size_t)(e - p) : strlen(p);

		fn(w, p, n);
		if (!e)
			break;
		p = e + 1;
	}
}

static void
join_one(struct worker *w, const char *g, size_t n)
{
	struct hub_grp *gr = grp_find(w, g, n);

	if (!gr) {
		if (w->ngrps == w->grps_cap) {
			size_t cap = w->grps_cap ? w->grps_cap * 2 : 16;
			void *p = realloc(w->grps, cap * sizeof(*w->grps));

			if (!p)
				return;
			w->grps = p;
			w->grps_cap = cap;
		}
		gr = &w->grps[w->ngrps++];
		memcpy(gr->name, g, n);
		gr->name[n] = '\0';
		gr->n = 0;
	}
	if (gr->n++ == 0)
		grp_submit(w, BRIDGE_GSUB, gr->name);
}

static void
leave_one(struct worker *w, const char *g, size_t n)
{
	struct hub_grp *gr = grp_find(w, g, n);

	if (!gr || --gr->n > 0)
		return;
	grp_submit(w, BRIDGE_GUNSUB, gr->name);
	*gr = w->grps[--w->ngrps];
}

void
hub__groups_join(struct worker *w, struct sess *s)
{
	HUB_ASSERT_THREAD(&w->service);
	if (s->groups_joined || !s->groups[0])
		return;
	each_group(w, s->groups, join_one);
	s->groups_joined = 1;
}

void
hub__groups_leave(struct worker *w, struct sess *s)
{
	HUB_ASSERT_THREAD(&w->service);
	if (!s->groups_joined)
		return;
	each_group(w, s->groups, leave_one);
	s->groups_joined = 0;
}

void
hub__groups_free(struct worker *w)
{
	free(w->grps);
	w->grps = NULL;
	w->ngrps = w->grps_cap = 0;
}

void
hub__group_cmd(struct worker *w, const struct bridge_ev *e)
{
	const char *g = e->device; /* "" for the fleet */
	size_t glen = strlen(g), cap, n, b, sent = 0, tail;
	enum proto_pl kind = proto_payload_kind(e->payload, e->len);
	char *base = NULL, *buf = NULL;
	uint64_t t0 = hub_clock_mono_us();

	HUB_ASSERT_THREAD(&w->service);
	if (kind == PROTO_PL_BINARY) {
		/* a binary frame has no room for the group or an id */
		cap = 1 + strlen(e->topic) + e->len;
		buf = malloc(cap);
		if (!buf)
			return;
		n = proto_frame_binary((uint8_t *)buf, cap, e->topic,
				       e->payload, e->len);
		tail = 0;
	} else {
		/* the frame without id, then per session its tail:
		 * ,"group":"g","id":N} */
		cap = proto_frame_msg_bound(e->topic, e->len);
		base = malloc(cap);
		buf = malloc(cap + HUB_ID_MAX + 48);
		if (!base || !buf)
			goto out;
		n = proto_frame_msg(base, cap, e->topic, e->payload, e->len,
				    kind, -1);
		if (!n)
			goto out;
		n--; /* the closing brace */
		memcpy(buf, base, n);
		tail = n;
	}
	for (b = 0; n && b <= w->map_mask; b++) {
		struct sess *s;

		for (s = w->map[b]; s; s = s->hnext) {
			size_t len = n;

			if (s->state != SESS_LIVE ||
			    (glen && !has_group(s->groups, g, glen)))
				continue;
			if (kind != PROTO_PL_BINARY) {
				int r;

				/* a fleet command names no group */
				if (e->qos > 0)
					r = snprintf(
					    buf + tail, HUB_ID_MAX + 48,
					    "%s%s%s,\"id\":%u}",
					    glen ? ",\"group\":\"" : "", g,
					    glen ? "\"" : "", ++s->next_cmd_id);
				else
					r = snprintf(buf + tail,
						     HUB_ID_MAX + 48, "%s%s%s}",
						     glen ? ",\"group\":\""
							  : "",
						     g, glen ? "\"" : "");
				len = tail + (size_t)r;
			}
			if (!hub__sess_send(s, buf, len,
					    kind == PROTO_PL_BINARY))
				sent++;
		}
	}
	metrics_add(w->m, M_CMDS_DELIVERED, sent);
	hub_log(HUB_LOG_DEBUG, "HUB-GROUP-CMD",
		"group=%s topic=%s devices=%zu in %llu ms", glen ? g : "*",
		e->topic, sent,
		(unsigned long long)(hub_clock_mono_us() - t0) / 1000);
out:
	free(base);
	free(buf);
}
