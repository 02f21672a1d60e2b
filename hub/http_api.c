/*
 * http_api.c - the answers of the status page's read-only JSON API
 * (/api/v1/status, /api/v1/devices, /api/v1/devices/{id}, /api/v1/events),
 * built on the ops vhost's reader thread from its own read-only registry
 * connection (registry_query.h) and the shared metrics.
 *
 * Threads: the reader thread only (hub__http_reader_main and what it
 * calls; asserted with HUB_ASSERT_THREAD(&vh->reader)). It takes requests
 * from the vhost's todo queue, hands answers back through the done queue
 * and wakes the service thread with lws_cancel_service() (http.c writes
 * them). The service thread never touches SQLite.
 */
#include "http_int.h"
#include "hub_version.h"
#include "registry_query.h"

#include <cjson/cJSON.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
json_i64(cJSON *o, const char *key, int64_t v)
{
	char buf[24];

	snprintf(buf, sizeof(buf), "%" PRId64, v);
	cJSON_AddRawToObject(o, key, buf);
}

static void
json_str_or_null(cJSON *o, const char *key, const char *v)
{
	if (v && *v)
		cJSON_AddStringToObject(o, key, v);
	else
		cJSON_AddNullToObject(o, key);
}

static cJSON *
device_json(const struct registry_query_device *qd)
{
	const struct registry_device *d = &qd->d;
	cJSON *o = cJSON_CreateObject(), *g;
	int i;

	cJSON_AddStringToObject(o, "id", d->id);
	cJSON_AddStringToObject(o, "name", d->name);
	/* the first REGISTRY_QUERY_GROUPS by name; groups_more only when
	 * there are more than that */
	g = cJSON_AddArrayToObject(o, "groups");
	for (i = 0; i < qd->ngroups; i++)
		cJSON_AddItemToArray(g, cJSON_CreateString(qd->groups[i]));
	if (qd->groups_total > qd->ngroups)
		json_i64(o, "groups_more", qd->groups_total - qd->ngroups);
	cJSON_AddBoolToObject(o, "disabled", d->disabled);
	cJSON_AddBoolToObject(o, "online", d->online);
	if (d->online)
		json_i64(o, "since", qd->since);
	else
		cJSON_AddNullToObject(o, "since");
	json_str_or_null(o, "addr", d->online ? d->addr : NULL);
	json_str_or_null(o, "hub", d->online ? d->hub : NULL);
	json_str_or_null(o, "session", d->online ? d->session : NULL);
	/* last activity: now for an open session (silent ones are closed
	 * within --idle-timeout), else when the last one ended */
	if (d->online)
		json_i64(o, "last_seen", hub_clock_ms());
	else if (d->last_seen > 0)
		json_i64(o, "last_seen", d->last_seen);
	else
		cJSON_AddNullToObject(o, "last_seen");
	json_i64(o, "created", d->created);
	return o;
}

static void
add_device(void *arg, const struct registry_query_device *d)
{
	cJSON_AddItemToArray(arg, device_json(d));
}

struct event_list {
	cJSON *arr;
	int64_t last_seq; /* the page's last (oldest) event: "next" */
};

static void
add_event(void *arg, const struct registry_event *e)
{
	struct event_list *el = arg;
	cJSON *o = cJSON_CreateObject();

	json_i64(o, "seq", e->seq);
	cJSON_AddStringToObject(o, "device", e->device);
	cJSON_AddStringToObject(o, "kind", registry_kind_name(e->kind));
	json_str_or_null(o, "reason", e->reason);
	json_i64(o, "ts", e->ts);
	json_str_or_null(o, "session", e->session);
	json_str_or_null(o, "addr", e->addr);
	json_str_or_null(o, "hub", e->hub);
	cJSON_AddItemToArray(el->arr, o);
	el->last_seq = e->seq;
}

static cJSON *
error_json(const char *msg)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddStringToObject(o, "error", msg);
	return o;
}

static cJSON *
status_json(struct worker *w, struct registry_query *q, int *status)
{
	struct metrics_sample *hist;
	const struct metrics *m = w->metrics;
	cJSON *o = cJSON_CreateObject(), *a, *h;
	int64_t devices = 0, online = 0;
	char why[128];
	int i, n, live = metrics_live(m);

	if (q && registry_query_counts(q, &devices, &online) != HUB_OK)
		devices = -1;
	cJSON_AddStringToObject(o, "hub", w->conf->hub_id);
	cJSON_AddStringToObject(o, "version", HUB_VERSION);
	json_i64(o, "time", hub_clock_ms());
	cJSON_AddBoolToObject(o, "ready", hub__http_ready(m, why, sizeof(why)));
	why[strcspn(why, "\n")] = '\0';
	cJSON_AddStringToObject(o, "ready_detail", why);
	json_i64(o, "connections", (int64_t)metrics_sum(m, M_CONNECTIONS));
	json_i64(o, "max_connections", w->conf->max_conns);
	json_i64(o, "devices", devices);
	json_i64(o, "devices_online", online);
	a = cJSON_AddObjectToObject(o, "workers");
	json_i64(a, "live", live);
	json_i64(a, "configured", m->nworkers);
	json_i64(a, "restarts", (int64_t)metrics_sum(m, M_WORKER_RESTARTS));
	a = cJSON_AddObjectToObject(o, "broker");
	json_i64(a, "connected", (int64_t)metrics_sum(m, M_BROKER_CONNECTED));
	json_i64(a, "pending", (int64_t)metrics_sum(m, M_BRIDGE_PENDING));
	a = cJSON_AddObjectToObject(o, "registry");
	json_i64(a, "open", (int64_t)metrics_sum(m, M_REGISTRY_OPEN));
	a = cJSON_AddObjectToObject(o, "messages");
	json_i64(a, "in", (int64_t)metrics_sum(m, M_MSG_IN));
	json_i64(a, "out", (int64_t)metrics_sum(m, M_MSG_OUT));
	/* [ts, connections, messages in, messages out], oldest first */
	a = cJSON_AddArrayToObject(o, "history");
	hist = malloc(sizeof(*hist) * METRICS_HISTORY);
	n = hist ? metrics_history(m, hist) : 0;
	for (i = 0; i < n; i++) {
		h = cJSON_CreateArray();
		cJSON_AddItemToArray(h,
				     cJSON_CreateNumber((double)hist[i].ts_ms));
		cJSON_AddItemToArray(
		    h, cJSON_CreateNumber((double)hist[i].connections));
		cJSON_AddItemToArray(
		    h, cJSON_CreateNumber((double)hist[i].msg_in));
		cJSON_AddItemToArray(
		    h, cJSON_CreateNumber((double)hist[i].msg_out));
		cJSON_AddItemToArray(a, h);
	}
	free(hist);
	*status = 200;
	return o;
}

/* Reader thread: runs one request against the registry; fills status,
 * body, len. */
static void
run_req(struct ops_vh *vh, struct registry_query *q, const char *qerr,
	struct ops_req *r)
{
	struct worker *w = vh->w;
	struct registry_query_device d;
	struct registry_query_filter f;
	struct event_list el;
	cJSON *o = NULL, *a;
	int rc = HUB_OK, more = 0;

	HUB_ASSERT_THREAD(&vh->reader);
	r->status = 500;
	if (r->kind == R_STATUS) {
		o = status_json(w, q, &r->status);
		goto out;
	}
	if (!q) {
		r->status = 503;
		o = error_json(qerr);
		goto out;
	}
	switch (r->kind) {
	case R_DEVICES:
		memset(&f, 0, sizeof(f));
		f.online = r->online;
		f.q = r->q[0] ? r->q : NULL;
		f.after = r->after[0] ? r->after : NULL;
		f.limit = r->limit;
		o = cJSON_CreateObject();
		a = cJSON_AddArrayToObject(o, "devices");
		rc = registry_query_devices(q, &f, add_device, a, &more);
		if (rc == HUB_OK && more) {
			cJSON *last =
			    cJSON_GetArrayItem(a, cJSON_GetArraySize(a) - 1);

			cJSON_AddStringToObject(
			    o, "next",
			    cJSON_GetObjectItem(last, "id")->valuestring);
		} else {
			cJSON_AddNullToObject(o, "next");
		}
		break;
	case R_DEVICE:
		rc = registry_query_device(q, r->id, &d);
		if (rc == HUB_OK)
			o = device_json(&d);
		else if (rc == HUB_ERR_NOTFOUND) {
			r->status = 404;
			o = error_json("no such device");
			goto out;
		}
		break;
	case R_EVENTS:
		o = cJSON_CreateObject();
		el.arr = cJSON_AddArrayToObject(o, "events");
		el.last_seq = 0;
		rc =
		    registry_query_events(q, r->id[0] ? r->id : NULL, r->before,
					  r->limit, add_event, &el, &more);
		if (rc == HUB_OK && more)
			json_i64(o, "next", el.last_seq);
		else
			cJSON_AddNullToObject(o, "next");
		break;
	default:
		break;
	}
	if (rc != HUB_OK) {
		cJSON_Delete(o);
		r->status = rc == HUB_ERR_BUSY ? 503 : 500;
		o = error_json(hub_strerror(rc));
		goto out;
	}
	r->status = 200;
out:
	r->body = o ? cJSON_PrintUnformatted(o) : NULL;
	r->len = r->body ? strlen(r->body) : 0;
	if (!r->body)
		r->status = 500;
	cJSON_Delete(o);
}

static void
wake_service(struct worker *w)
{
	pthread_mutex_lock(&w->ctx_lock);
	if (w->ctx)
		lws_cancel_service(w->ctx);
	pthread_mutex_unlock(&w->ctx_lock);
}

/*
 * The reader thread: takes requests, answers them from its read-only
 * registry connection (opened lazily, reopened after a failure, so a hub
 * started before its registry existed still answers later).
 */
void *
hub__http_reader_main(void *arg)
{
	struct ops_vh *vh = arg;
	struct registry_query *q = NULL;
	char err[256] = "registry not open";
	struct ops_req *r;

	hub_thread_claim(&vh->reader, "ops reader");
	for (;;) {
		pthread_mutex_lock(&vh->lock);
		while (!vh->todo && !vh->stop)
			pthread_cond_wait(&vh->cond, &vh->lock);
		if (vh->stop && !vh->todo) {
			pthread_mutex_unlock(&vh->lock);
			break;
		}
		r = vh->todo;
		vh->todo = r->next;
		if (!vh->todo)
			vh->todo_tail = NULL;
		r->next = NULL;
		pthread_mutex_unlock(&vh->lock);

		if (!q && registry_query_open(vh->w->conf->db, &q, err,
					      sizeof(err)) != HUB_OK)
			q = NULL;
		run_req(vh, q, err, r);
		if (q && r->status == 500) { /* start afresh next time */
			registry_query_close(q);
			q = NULL;
		}

		pthread_mutex_lock(&vh->lock);
		if (vh->done_tail)
			vh->done_tail->next = r;
		else
			vh->done = r;
		vh->done_tail = r;
		pthread_mutex_unlock(&vh->lock);
		wake_service(vh->w);
	}
	registry_query_close(q);
	hub_thread_release(&vh->reader);
	return NULL;
}
