/*
 * bridge_subs.c - the devices this worker routes commands for, and their
 * subscriptions (DESIGN.md "MQTT mapping", Routing).
 *
 * Per held device the bridge subscribes to "<prefix>/<id>/cmd/#" at once
 * and to "hub/sessions/<id>" only once the broker acked this worker's own
 * (retained) announcement of the device's session: from then on, anything
 * that topic delivers - the retained announcement at subscribe time or a
 * live one - is newer than ours in the broker's order, so a session is
 * replaced by any announcement of another session id, and no wall clock
 * (skewed between hubs) decides which session wins. QoS 1. With MQTT 5 both use
 * retain-as-published (a retained offline command and a live retained one both
 * arrive with the retain flag set) and no-local (this worker's own command
 * clears and session announcements do not come back to it).
 *
 * The set is the truth: the bridge connects with a clean start, so after
 * every (re)connect it subscribes every device in the set again, 500
 * topics per subscribeMany call. SUB/UNSUB requests that arrive in a burst
 * (a reconnect storm of devices) are batched the same way: a run of
 * requests of one kind is collected and sent as one call, so their order
 * is kept (SUB a, UNSUB a, SUB a ends subscribed, and the last SUB does
 * reach the broker, which then re-delivers retained commands).
 *
 * ONLY the bridge thread calls these functions.
 */
#include "bridge_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SUB_TOPIC_MAX (BRIDGE_PREFIX_MAX + HUB_ID_MAX + 16)

static size_t
hash_id(const char *s)
{
	return hub_hash_str(s);
}

int
bridge__subs_init(struct bridge_subs *s)
{
	memset(s, 0, sizeof(*s));
	s->nbuckets = 1024;
	s->buckets = calloc(s->nbuckets, sizeof(*s->buckets));
	return s->buckets ? HUB_OK : HUB_ERR_NOMEM;
}

void
bridge__subs_free(struct bridge_subs *s)
{
	size_t i;

	if (!s->buckets)
		return;
	for (i = 0; i < s->nbuckets; i++) {
		struct bridge_subs_node *n = s->buckets[i], *next;

		for (; n; n = next) {
			next = n->next;
			free(n);
		}
	}
	free(s->buckets);
	free(s->batch);
	free(s->groups);
	memset(s, 0, sizeof(*s));
}

int
bridge__subs_has(const struct bridge_subs *s, const char *device)
{
	const struct bridge_subs_node *n;

	for (n = s->buckets[hash_id(device) & (s->nbuckets - 1)]; n;
	     n = n->next)
		if (!strcmp(n->id, device))
			return 1;
	return 0;
}

size_t
bridge__subs_count(const struct bridge_subs *s)
{
	return s->n;
}

/* Doubles the bucket array; on allocation failure the chains just grow. */
static void
grow(struct bridge_subs *s)
{
	size_t nb = s->nbuckets * 2, i;
	struct bridge_subs_node **nbk = calloc(nb, sizeof(*nbk));

	if (!nbk)
		return;
	for (i = 0; i < s->nbuckets; i++) {
		struct bridge_subs_node *n = s->buckets[i], *next;

		for (; n; n = next) {
			size_t h = hash_id(n->id) & (nb - 1);

			next = n->next;
			n->next = nbk[h];
			nbk[h] = n;
		}
	}
	free(s->buckets);
	s->buckets = nbk;
	s->nbuckets = nb;
}

static int
set_add(struct bridge_subs *s, const char *device)
{
	struct bridge_subs_node *n;
	size_t h, len = strlen(device);

	if (bridge__subs_has(s, device))
		return 0;
	if (len > HUB_ID_MAX)
		return HUB_ERR_INVAL;
	n = malloc(sizeof(*n));
	if (!n)
		return HUB_ERR_NOMEM;
	n->sess_on = 0;
	memcpy(n->id, device, len + 1);
	if (s->n >= s->nbuckets)
		grow(s);
	h = hash_id(device) & (s->nbuckets - 1);
	n->next = s->buckets[h];
	s->buckets[h] = n;
	s->n++;
	return 1;
}

static int
set_del(struct bridge_subs *s, const char *device)
{
	struct bridge_subs_node **pp =
	    &s->buckets[hash_id(device) & (s->nbuckets - 1)];

	for (; *pp; pp = &(*pp)->next) {
		struct bridge_subs_node *n = *pp;

		if (!strcmp(n->id, device)) {
			*pp = n->next;
			free(n);
			s->n--;
			return 1;
		}
	}
	return 0;
}

/* ---- hub/revoked/+ (signed fleet tokens) ------------------------------
 * One subscription per worker, after every connect: the retained
 * revocations arrive at once, later ones live. */
#define REVOKED_PREFIX "hub/revoked/"

int
bridge__revoked_topic(const struct bridge *b, const char *topic, char *device,
		      size_t cap)
{
	size_t n = sizeof(REVOKED_PREFIX) - 1, len;

	if (!b->fleet || strncmp(topic, REVOKED_PREFIX, n))
		return HUB_ERR_NOTFOUND;
	len = strlen(topic + n);
	if (len >= cap || !proto_id_valid(topic + n, len))
		return HUB_ERR_NOTFOUND;
	memcpy(device, topic + n, len + 1);
	return HUB_OK;
}

/* Paho's thread: the SUBACK. A refusal (0x80, e.g. while a clustered
 * broker sets up its streams) leaves revoked_ok at 0 and the bridge
 * thread subscribes again a second later: a hub that missed this
 * subscription would accept revoked tokens. */
static void
revoked_granted3(void *ctx, MQTTAsync_successData *r)
{
	if (r && r->alt.qos != 0x80)
		atomic_store(&((struct bridge *)ctx)->revoked_ok, 1);
}

static void
revoked_granted5(void *ctx, MQTTAsync_successData5 *r)
{
	if (r && r->reasonCode < MQTTREASONCODE_UNSPECIFIED_ERROR)
		atomic_store(&((struct bridge *)ctx)->revoked_ok, 1);
}

static void
subscribe_revoked(struct bridge *b)
{
	MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;

	ro.context = b;
	if (b->mqtt_version == 5)
		ro.onSuccess5 = revoked_granted5;
	else
		ro.onSuccess = revoked_granted3;
	MQTTAsync_subscribe(b->cli, REVOKED_PREFIX "+", 1, &ro);
}

void
bridge__revoked_retry(struct bridge *b)
{
	if (b->fleet && b->link == BRIDGE_UP && !atomic_load(&b->revoked_ok))
		subscribe_revoked(b);
}

/* ---- group and fleet commands -----------------------------------------
 * "<fleet_prefix>/cmd/#" once per worker, "<group_prefix>/<g>/cmd/#" per
 * group the service thread asks for (it counts members, so a group is
 * subscribed while at least one of its devices is held here). */

int
bridge__group_topic(const struct bridge *b, const char *topic, char *group,
		    size_t cap, const char **rel)
{
	size_t n, gl;
	const char *g, *slash;

	if (!b->group_prefix)
		return HUB_ERR_NOTFOUND;
	n = strlen(b->fleet_prefix);
	if (!strncmp(topic, b->fleet_prefix, n) &&
	    !strncmp(topic + n, "/cmd/", 5)) {
		group[0] = '\0';
		*rel = topic + n + 1;
		return HUB_OK;
	}
	n = strlen(b->group_prefix);
	if (strncmp(topic, b->group_prefix, n) || topic[n] != '/')
		return HUB_ERR_NOTFOUND;
	g = topic + n + 1;
	slash = strchr(g, '/');
	if (!slash || strncmp(slash, "/cmd/", 5))
		return HUB_ERR_NOTFOUND;
	gl = (size_t)(slash - g);
	if (gl >= cap || !proto_id_valid(g, gl))
		return HUB_ERR_NOTFOUND;
	memcpy(group, g, gl);
	group[gl] = '\0';
	*rel = slash + 1;
	return HUB_OK;
}

static void
group_sub(struct bridge *b, int on, const char *group)
{
	MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
	char topic[BRIDGE_PREFIX_MAX + HUB_ID_MAX + 16];

	if (group)
		snprintf(topic, sizeof(topic), "%s/%s/cmd/#", b->group_prefix,
			 group);
	else
		snprintf(topic, sizeof(topic), "%s/cmd/#", b->fleet_prefix);
	if (b->link != BRIDGE_UP)
		return; /* the resubscription after the connect does it */
	if (on)
		MQTTAsync_subscribe(b->cli, topic, 1, &ro);
	else
		MQTTAsync_unsubscribe(b->cli, topic, &ro);
}

static void
subscribe_groups(struct bridge *b)
{
	size_t i;

	if (!b->group_prefix)
		return;
	group_sub(b, 1, NULL);
	for (i = 0; i < b->subs.ngroups; i++)
		group_sub(b, 1, b->subs.groups[i]);
}

void
bridge__groups_request(struct bridge *b, int kind, const char *group)
{
	struct bridge_subs *s = &b->subs;
	size_t i;

	if (!b->group_prefix)
		return;
	for (i = 0; i < s->ngroups && strcmp(s->groups[i], group); i++)
		;
	if (kind == BRIDGE_GSUB) {
		if (i < s->ngroups)
			return;
		if (s->ngroups == s->groups_cap) {
			size_t cap = s->groups_cap ? s->groups_cap * 2 : 16;
			void *p = realloc(s->groups, cap * sizeof(*s->groups));

			if (!p)
				return; /* that group's commands miss this
					   worker */
			s->groups = p;
			s->groups_cap = cap;
		}
		snprintf(s->groups[s->ngroups++], sizeof(s->groups[0]), "%s",
			 group);
		group_sub(b, 1, group);
	} else if (i < s->ngroups) {
		group_sub(b, 0, group);
		s->ngroups--;
		if (i < s->ngroups)
			memcpy(s->groups[i], s->groups[s->ngroups],
			       sizeof(s->groups[0]));
	}
}

/* One SUBSCRIBE or UNSUBSCRIBE for ids[0..n) (2 topics each). */

static struct bridge_subs_node *
node_of(const struct bridge_subs *s, const char *device)
{
	struct bridge_subs_node *n;

	for (n = s->buckets[hash_id(device) & (s->nbuckets - 1)]; n;
	     n = n->next)
		if (!strcmp(n->id, device))
			return n;
	return NULL;
}

/*
 * One SUBSCRIBE or UNSUBSCRIBE for ids[0..n): BRIDGE_SUB the command
 * topics, BRIDGE__SUB_SESS the announcement topics, BRIDGE_UNSUB both.
 */
static void
send_ids(struct bridge *b, int kind, char (*ids)[HUB_ID_MAX + 1], size_t n)
{
	MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
	MQTTSubscribe_options *opts = NULL;
	char(*buf)[SUB_TOPIC_MAX] = NULL, **topics = NULL;
	int *qos = NULL, count = 0;
	size_t i;

	if (!n)
		return;
	buf = malloc(2 * n * sizeof(*buf));
	topics = malloc(2 * n * sizeof(*topics));
	qos = malloc(2 * n * sizeof(*qos));
	opts = calloc(2 * n, sizeof(*opts));
	if (!buf || !topics || !qos || !opts)
		goto out; /* the set still holds them: next connect retries */
	for (i = 0; i < n; i++) {
		MQTTSubscribe_options o = MQTTSubscribe_options_initializer;

		o.retainAsPublished = 1;
		o.noLocal = 1;
		if (kind != BRIDGE__SUB_SESS) {
			if (proto_topic_up(b->prefix, ids[i], "cmd/#",
					   buf[count], SUB_TOPIC_MAX) != HUB_OK)
				continue;
			topics[count] = buf[count];
			opts[count] = o;
			qos[count++] = 1;
		}
		if (kind != BRIDGE_SUB) {
			memcpy(buf[count], "hub/sessions/", 14);
			memcpy(buf[count] + 13, ids[i], strlen(ids[i]) + 1);
			topics[count] = buf[count];
			opts[count] = o;
			qos[count++] = 1;
		}
	}
	if (!count)
		goto out;
	/* Paho copies topics and options into its command: no callbacks
	 * needed, a failed (un)subscribe is repaired by the resubscription
	 * after the reconnect that follows a lost link. */
	if (kind != BRIDGE_UNSUB) {
		if (b->mqtt_version == 5) {
			/* Paho reads the list only for more than one topic */
			ro.subscribeOptions = opts[0];
			ro.subscribeOptionsCount = count;
			ro.subscribeOptionsList = opts;
		}
		MQTTAsync_subscribeMany(b->cli, count, topics, qos, &ro);
	} else {
		MQTTAsync_unsubscribeMany(b->cli, count, topics, &ro);
	}
out:
	free(buf);
	free(topics);
	free(qos);
	free(opts);
}

void
bridge__subs_flush(struct bridge *b)
{
	struct bridge_subs *s = &b->subs;
	size_t i, per = BRIDGE_SUB_BATCH / 2;

	if (b->link == BRIDGE_UP)
		for (i = 0; i < s->batch_n; i += per)
			send_ids(b, s->batch_kind, s->batch + i,
				 s->batch_n - i < per ? s->batch_n - i : per);
	s->batch_n = 0;
}

static void batch_add(struct bridge *b, int kind, const char *device);

void
bridge__subs_request(struct bridge *b, int kind, const char *device)
{
	struct bridge_subs *s = &b->subs;

	if (kind == BRIDGE_SUB) {
		if (set_add(s, device) < 0)
			return;
	} else if (!set_del(s, device)) {
		return; /* not held: nothing to unsubscribe */
	}
	if (b->link != BRIDGE_UP)
		return; /* the resubscription after connecting covers it */
	batch_add(b, kind, device);
}

void
bridge__subs_announced(struct bridge *b, const char *device)
{
	struct bridge_subs_node *n = node_of(&b->subs, device);

	if (!n || n->sess_on)
		return; /* not held any more, or subscribed already */
	n->sess_on = 1;
	if (b->link == BRIDGE_UP)
		batch_add(b, BRIDGE__SUB_SESS, device);
	/* else: the resubscription after connecting covers it */
}

static void
batch_add(struct bridge *b, int kind, const char *device)
{
	struct bridge_subs *s = &b->subs;

	if (s->batch_n && s->batch_kind != kind)
		bridge__subs_flush(b);
	if (s->batch_n == s->batch_cap) {
		size_t nc = s->batch_cap ? s->batch_cap * 2 : 256;
		void *nb = realloc(s->batch, nc * sizeof(*s->batch));

		if (!nb) {
			bridge__subs_flush(b);
			if (!s->batch_cap)
				return;
		} else {
			s->batch = nb;
			s->batch_cap = nc;
		}
	}
	s->batch_kind = kind;
	memcpy(s->batch[s->batch_n++], device, strlen(device) + 1);
}

void
bridge__subs_resubscribe(struct bridge *b)
{
	struct bridge_subs *s = &b->subs;
	char(*ids)[HUB_ID_MAX + 1];
	size_t i, k = 0, per = BRIDGE_SUB_BATCH / 2;

	s->batch_n = 0; /* covered by the full set */
	if (b->fleet)
		subscribe_revoked(b);
	subscribe_groups(b);
	if (!s->n)
		return;
	ids = malloc(per * sizeof(*ids));
	if (!ids)
		return;
	for (i = 0; i < s->nbuckets; i++) {
		struct bridge_subs_node *n;

		for (n = s->buckets[i]; n; n = n->next) {
			memcpy(ids[k++], n->id, sizeof(n->id));
			if (k == per) {
				send_ids(b, BRIDGE_SUB, ids, k);
				k = 0;
			}
		}
	}
	send_ids(b, BRIDGE_SUB, ids, k);
	/* the announcement topics of the devices whose announcement was
	 * acked; the others follow their (re-sent) announcement's ack */
	k = 0;
	for (i = 0; i < s->nbuckets; i++) {
		struct bridge_subs_node *n;

		for (n = s->buckets[i]; n; n = n->next) {
			if (!n->sess_on)
				continue;
			memcpy(ids[k++], n->id, sizeof(n->id));
			if (k == per) {
				send_ids(b, BRIDGE__SUB_SESS, ids, k);
				k = 0;
			}
		}
	}
	send_ids(b, BRIDGE__SUB_SESS, ids, k);
	free(ids);
}
