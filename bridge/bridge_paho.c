/*
 * bridge_paho.c - the bridge's side of Paho: the callbacks, the publish
 * that the reliable queue calls through bridge__paho_ops, connect and
 * disconnect.
 *
 * Threads: Paho's threads run the callbacks. They never block and never
 * touch bridge-thread state: a completion (publish done, connect result,
 * link lost) becomes a two-int record in the callback ring (b->cbs, under
 * b->lock) for the bridge thread (bridge_link.c). The ring grows when full,
 * and by construction holds at most one record per send slot plus a few
 * link records, so it stays small. messageArrived is the exception: it
 * builds the bridge_ev itself and pushes it straight to the event queue (a
 * copy, no shared state); if that queue is full it returns 0 and Paho
 * delivers the message again later, which is Paho's own back-pressure.
 * The publish, connect and disconnect calls run on the bridge thread.
 */
#include "bridge_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <MQTTProperties.h>

#define PUBACK_PACKET 4 /* MQTT control packet type */

/* ---- callbacks (Paho's threads) ------------------------------------- */

/*
 * Queues a completion for the bridge thread. A lazy one (a QoS 0 message
 * written) wakes the bridge thread only once BRIDGE_LAZY_CBS of them wait:
 * nothing waits on it but the window, and the bridge thread takes the ring
 * on every wake (the next submit) and at least once a second anyway. That
 * saves a futex wake and a task switch per message (docs/benchmarks.md).
 */
static void
cb_push(struct bridge *b, int kind, int val, int lazy)
{
	pthread_mutex_lock(&b->lock);
	if (b->cb_len == b->cb_cap) {
		size_t nc = b->cb_cap * 2, i;
		struct bridge_cb *n = malloc(nc * sizeof(*n));

		if (!n) {
			/* the bridge thread resets the link: every send in
			 * flight is requeued, nothing is lost */
			b->cb_overflow = 1;
			pthread_cond_signal(&b->cond);
			pthread_mutex_unlock(&b->lock);
			return;
		}
		for (i = 0; i < b->cb_len; i++)
			n[i] = b->cbs[(b->cb_head + i) % b->cb_cap];
		free(b->cbs);
		b->cbs = n;
		b->cb_cap = nc;
		b->cb_head = 0;
	}
	b->cbs[(b->cb_head + b->cb_len) % b->cb_cap] =
	    (struct bridge_cb){.kind = kind, .val = val};
	b->cb_len++;
	if (!lazy || b->cb_len >= b->lazy_cbs)
		pthread_cond_signal(&b->cond);
	pthread_mutex_unlock(&b->lock);
}

static void
slot_cb(void *ctx, int kind, int lazy)
{
	struct bridge_slot *s = ctx;
	struct bridge *b = s->owner;

	cb_push(b, kind, (int)(s - b->rq.slots), lazy);
}

static void
on_pub_ok5(void *ctx, MQTTAsync_successData5 *r)
{
	slot_cb(ctx, BRIDGE_CB_PUB_OK, 0);
}

static void
on_pub_written5(void *ctx, MQTTAsync_successData5 *r)
{
	slot_cb(ctx, BRIDGE_CB_PUB_OK, 1);
}

static void
on_pub_fail5(void *ctx, MQTTAsync_failureData5 *r)
{
	int rej = r && r->packet_type == PUBACK_PACKET &&
		  r->reasonCode >= MQTTREASONCODE_UNSPECIFIED_ERROR;

	slot_cb(ctx, rej ? BRIDGE_CB_PUB_REJECT : BRIDGE_CB_PUB_FAIL, 0);
}

static void
on_pub_ok3(void *ctx, MQTTAsync_successData *r)
{
	slot_cb(ctx, BRIDGE_CB_PUB_OK, 0);
}

static void
on_pub_written3(void *ctx, MQTTAsync_successData *r)
{
	slot_cb(ctx, BRIDGE_CB_PUB_OK, 1);
}

static void
on_pub_fail3(void *ctx, MQTTAsync_failureData *r)
{
	slot_cb(ctx, BRIDGE_CB_PUB_FAIL, 0);
}

static void
on_conn_ok5(void *ctx, MQTTAsync_successData5 *r)
{
	int rm = 65535;

	if (r && MQTTProperties_hasProperty(&r->properties,
					    MQTTPROPERTY_CODE_RECEIVE_MAXIMUM))
		rm = MQTTProperties_getNumericValue(
		    &r->properties, MQTTPROPERTY_CODE_RECEIVE_MAXIMUM);
	cb_push(ctx, BRIDGE_CB_CONN_OK, rm, 0);
}

/* Paho's thread: keeps the words of a failed connect for the log. */
static void
note_conn_err(struct bridge *b, int code, const char *msg, int reason)
{
	char buf[sizeof(b->conn_err)];

	if (msg && *msg)
		snprintf(buf, sizeof(buf), "%s", msg);
	else if (reason > 0)
		snprintf(buf, sizeof(buf), "refused by the broker: %s",
			 MQTTReasonCode_toString((enum MQTTReasonCodes)reason));
	else
		snprintf(buf, sizeof(buf), "%s", MQTTAsync_strerror(code));
	pthread_mutex_lock(&b->lock);
	memcpy(b->conn_err, buf, sizeof(buf));
	pthread_mutex_unlock(&b->lock);
}

static void
on_conn_fail5(void *ctx, MQTTAsync_failureData5 *r)
{
	note_conn_err(ctx, r ? r->code : 0, r ? r->message : NULL,
		      r ? (int)r->reasonCode : 0);
	cb_push(ctx, BRIDGE_CB_CONN_FAIL, r ? r->code : 0, 0);
}

static void
on_conn_ok3(void *ctx, MQTTAsync_successData *r)
{
	cb_push(ctx, BRIDGE_CB_CONN_OK, 65535, 0);
}

static void
on_conn_fail3(void *ctx, MQTTAsync_failureData *r)
{
	note_conn_err(ctx, r ? r->code : 0, r ? r->message : NULL, 0);
	cb_push(ctx, BRIDGE_CB_CONN_FAIL, r ? r->code : 0, 0);
}

static void
on_lost(void *ctx, char *cause)
{
	cb_push(ctx, BRIDGE_CB_LOST, 0, 0);
}

static void
on_disconnected(void *ctx, MQTTProperties *props, enum MQTTReasonCodes rc)
{
	cb_push(ctx, BRIDGE_CB_LOST, (int)rc, 0);
}

static void
on_disc_ok5(void *ctx, MQTTAsync_successData5 *r)
{
	cb_push(ctx, BRIDGE_CB_DISC_DONE, 0, 0);
}

static void
on_disc_fail5(void *ctx, MQTTAsync_failureData5 *r)
{
	cb_push(ctx, BRIDGE_CB_DISC_DONE, 0, 0);
}

static void
on_disc_ok3(void *ctx, MQTTAsync_successData *r)
{
	cb_push(ctx, BRIDGE_CB_DISC_DONE, 0, 0);
}

static void
on_disc_fail3(void *ctx, MQTTAsync_failureData *r)
{
	cb_push(ctx, BRIDGE_CB_DISC_DONE, 0, 0);
}

/*
 * A command or session announcement: copy it into an event for the
 * service thread. 0 tells Paho to deliver it again later (event queue full
 * or no memory); 1 that it was consumed (queued, or not ours and dropped).
 */
static int
on_message(void *ctx, char *topic, int topic_len, MQTTAsync_message *msg)
{
	struct bridge *b = ctx;
	char device[HUB_ID_MAX + 1];
	const char *rel = NULL;
	struct bridge_ev *e;
	int is_session = 0, kind;

	if (topic_len > 0 && strlen(topic) != (size_t)topic_len)
		goto consumed; /* a NUL inside the topic: not ours */
	if (bridge__revoked_topic(b, topic, device, sizeof(device)) == HUB_OK) {
		kind = BRIDGE_EV_REVOKED; /* an empty one clears: keep it */
		goto queue;
	}
	if (bridge__group_topic(b, topic, device, sizeof(device), &rel) ==
	    HUB_OK) {
		/* live commands only: a retained or empty one is not one */
		if (msg->retained || msg->payloadlen == 0)
			goto consumed;
		if (!proto_topic_valid(rel, strlen(rel)) ||
		    (size_t)msg->payloadlen > b->max_cmd) {
			atomic_fetch_add(&b->st_cmds_dropped, 1);
			goto consumed;
		}
		kind = BRIDGE_EV_GROUPCMD;
		goto queue;
	}
	if (proto_topic_down(b->prefix, topic, device, sizeof(device), &rel,
			     &is_session) != HUB_OK)
		goto consumed;
	/* a retained zero-length publish deletes a retained command (another
	 * worker clearing an acked offline command): never a command. MQTT 3
	 * has no no-local, so our own clears come back, and not retained */
	if (!is_session && msg->payloadlen == 0 &&
	    (msg->retained || b->mqtt_version == 3))
		goto consumed;
	/* commands obey the same topic rules as the uplink (a clear of a
	 * topic we cannot publish would never happen), and a command larger
	 * than a session's queue could never be delivered: drop both here,
	 * before anything is copied or parsed on the service thread */
	if (!is_session && (!proto_topic_valid(rel, strlen(rel)) ||
			    (size_t)msg->payloadlen > b->max_cmd)) {
		atomic_fetch_add(&b->st_cmds_dropped, 1);
		goto consumed;
	}
	kind = is_session ? BRIDGE_EV_SESSION : BRIDGE_EV_CMD;
queue:
	e = bridge__ev_new(
	    kind, device,
	    kind == BRIDGE_EV_CMD || kind == BRIDGE_EV_GROUPCMD ? rel : NULL,
	    msg->payload, msg->payloadlen > 0 ? (size_t)msg->payloadlen : 0);
	if (!e)
		return 0;
	e->qos = msg->qos;
	e->retained = msg->retained;
	e->t_rx_us = hub_clock_mono_us();
	if (hub_queue_push(b->evq, e) != HUB_OK) {
		free(e);
		bridge__wake_maybe(b);
		return 0;
	}
	if (kind == BRIDGE_EV_CMD || kind == BRIDGE_EV_GROUPCMD)
		atomic_fetch_add(&b->st_cmds_in, 1);
	bridge__wake_maybe(b);
consumed:
	MQTTAsync_freeMessage(&msg);
	MQTTAsync_free(topic);
	return 1;
}

int
bridge__paho_callbacks(struct bridge *b)
{
	if (MQTTAsync_setCallbacks(b->cli, b, on_lost, on_message, NULL) !=
		MQTTASYNC_SUCCESS ||
	    (b->mqtt_version == 5 &&
	     MQTTAsync_setDisconnected(b->cli, b, on_disconnected) !=
		 MQTTASYNC_SUCCESS))
		return HUB_ERR_BROKER;
	return HUB_OK;
}

/* ---- publish (bridge thread) ---------------------------------------- */

static int
send_one(struct bridge *b, struct bridge_msg *m, int slot)
{
	MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
	MQTTAsync_message pm = MQTTAsync_message_initializer;
	char topic[BRIDGE_FULL_TOPIC_MAX], id[16];
	const char *t = topic;
	int rc = HUB_OK;

	HUB_ASSERT_THREAD(&b->thread);
	switch (m->kind) {
	case BRIDGE_PUB:
	case BRIDGE_CLEAR:
		rc = proto_topic_up(b->prefix, m->device, m->topic, topic,
				    sizeof(topic));
		break;
	case BRIDGE_STATUS:
		rc = proto_topic_up(b->prefix, m->device, "status", topic,
				    sizeof(topic));
		break;
	case BRIDGE_ANNOUNCE:
		rc = proto_topic_up("hub", "sessions", m->device, topic,
				    sizeof(topic));
		break;
	default:
		t = m->topic;
		break;
	}
	if (rc != HUB_OK)
		return MQTTASYNC_BAD_UTF8_STRING; /* cannot be sent: refuse */
	pm.payload = m->payload;
	pm.payloadlen = (int)m->len;
	pm.qos = m->qos;
	pm.retained = m->retain;
	ro.context = &b->rq.slots[slot];
	if (b->mqtt_version == 5) {
		ro.onSuccess5 = m->qos ? on_pub_ok5 : on_pub_written5;
		ro.onFailure5 = on_pub_fail5;
		if (m->kind == BRIDGE_PUB) {
			MQTTProperty p;

			memset(&p, 0, sizeof(p));
			p.identifier = MQTTPROPERTY_CODE_USER_PROPERTY;
			if (m->session[0]) {
				p.value.data.data = "session";
				p.value.data.len = 7;
				p.value.value.data = m->session;
				p.value.value.len = (int)strnlen(
				    m->session, sizeof(m->session));
				MQTTProperties_add(&pm.properties, &p);
			}
			if (m->qos) {
				snprintf(id, sizeof(id), "%u", m->msg_id);
				p.value.data.data = "id";
				p.value.data.len = 2;
				p.value.value.data = id;
				p.value.value.len = (int)strlen(id);
				MQTTProperties_add(&pm.properties, &p);
			}
		}
	} else {
		ro.onSuccess = m->qos ? on_pub_ok3 : on_pub_written3;
		ro.onFailure = on_pub_fail3;
	}
	/* Paho copies topic, payload and properties into its command */
	rc = MQTTAsync_sendMessage(b->cli, t, &pm, &ro);
	MQTTProperties_free(&pm.properties);
	return rc;
}

/* 1 for a Paho refusal that is about the message, not the moment. */
static int
refused_for_good(int rc)
{
	switch (rc) {
	case MQTTASYNC_BAD_UTF8_STRING:
	case MQTTASYNC_NULL_PARAMETER:
	case MQTTASYNC_TOPICNAME_TRUNCATED:
	case MQTTASYNC_BAD_STRUCTURE:
	case MQTTASYNC_BAD_QOS:
	case MQTTASYNC_BAD_MQTT_OPTION:
	case MQTTASYNC_WRONG_MQTT_VERSION:
		return 1;
	}
	return 0;
}

/* The reliable queue's transport (bridge_queue.h). */
static enum bridge_send_rc
paho_publish(void *arg, struct bridge_msg *m, int slot)
{
	struct bridge *b = arg;
	int rc = send_one(b, m, slot);

	if (rc == MQTTASYNC_SUCCESS)
		return BRIDGE_SEND_OK;
	if (refused_for_good(rc))
		return BRIDGE_SEND_REFUSED;
	if (rc == MQTTASYNC_DISCONNECTED && !MQTTAsync_isConnected(b->cli))
		return BRIDGE_SEND_DOWN;
	return BRIDGE_SEND_BUSY; /* -12 despite the window, or transient */
}

const struct bridge_rq_ops bridge__paho_ops = {
    .publish = paho_publish,
    .finished = bridge__msg_finished,
};

int
bridge__paho_is_connected(struct bridge *b)
{
	return MQTTAsync_isConnected(b->cli);
}

/* ---- connect and disconnect (bridge thread) ------------------------- */

void
bridge__paho_connect(struct bridge *b)
{
	MQTTAsync_connectOptions v5 = MQTTAsync_connectOptions_initializer5;
	MQTTAsync_connectOptions v3 = MQTTAsync_connectOptions_initializer;
	MQTTAsync_connectOptions *co = b->mqtt_version == 5 ? &v5 : &v3;
	MQTTAsync_willOptions will = MQTTAsync_willOptions_initializer;
	MQTTAsync_SSLOptions ssl = MQTTAsync_SSLOptions_initializer;
	char host[256];
	unsigned port;
	int tls = 0;

	HUB_ASSERT_THREAD(&b->thread);
	if (b->mqtt_version == 5) {
		co->cleanstart = 1;
		co->onSuccess5 = on_conn_ok5;
		co->onFailure5 = on_conn_fail5;
		co->MQTTVersion = MQTTVERSION_5;
	} else {
		co->cleansession = 1;
		co->onSuccess = on_conn_ok3;
		co->onFailure = on_conn_fail3;
		co->MQTTVersion = MQTTVERSION_3_1_1;
	}
	co->context = b;
	co->keepAliveInterval = BRIDGE_KEEPALIVE;
	co->connectTimeout = BRIDGE_CONNECT_TIMEOUT;
	co->maxInflight = 65535;
	co->automaticReconnect = 0;
	co->username = b->user;
	co->password = b->password;
	if (b->node_topic) {
		will.topicName = b->node_topic;
		will.message = "offline";
		will.retained = 1;
		will.qos = 1;
		co->will = &will;
	}
	if (b->nuris > 1) {
		/* failover: Paho tries them in order on each connect */
		co->serverURIs = b->uris;
		co->serverURIcount = b->nuris;
	}
	if (bridge__uri_parse(b->uris[0], host, sizeof(host), &port, &tls) ==
		HUB_OK &&
	    tls) {
		ssl.verify = 1; /* host name check; system trust store */
		co->ssl = &ssl;
	}
	if (MQTTAsync_connect(b->cli, co) == MQTTASYNC_SUCCESS)
		b->link = BRIDGE_CONNECTING;
	else
		bridge__schedule_reconnect(b);
}

int
bridge__paho_disconnect(struct bridge *b)
{
	MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;

	if (b->mqtt_version == 5) {
		d.onSuccess5 = on_disc_ok5;
		d.onFailure5 = on_disc_fail5;
	} else {
		d.onSuccess = on_disc_ok3;
		d.onFailure = on_disc_fail3;
	}
	d.context = b;
	d.timeout = 1000;
	return MQTTAsync_disconnect(b->cli, &d) == MQTTASYNC_SUCCESS
		   ? HUB_OK
		   : HUB_ERR_BROKER;
}

/* Drops the connection without waiting for anything (no callback). */
void
bridge__paho_drop(struct bridge *b)
{
	MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;

	MQTTAsync_disconnect(b->cli, &d);
}
