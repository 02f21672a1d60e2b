/*
 * http_int.h - shared by the files of the operations listener: http.c (the
 * service thread: routing, the token, the request queue) and http_api.c
 * (the reader thread: /api/v1 answers from the registry).
 *
 * Threads: see each field. The todo and done queues are under struct
 * ops_vh's lock; ops_req.wsi and the inflight list belong to the service
 * thread; a request's parameters are written before it is queued and its
 * answer by the reader before it is handed back.
 */
#ifndef HUB_HTTP_INT_H
#define HUB_HTTP_INT_H

#include "hub_int.h"

#define API_DEFAULT_LIMIT 50
#define API_MAX_LIMIT 1000
#define API_Q_MAX 128
#define TOKEN_MAX 512

enum req_kind { R_STATUS, R_DEVICES, R_DEVICE, R_EVENTS };

struct ops_req {
	struct ops_req *next;	  /* todo / done queue (under lock) */
	struct ops_req *inflight; /* service thread: unanswered requests */
	struct lws *wsi;	  /* service thread; NULL: the client left */
	int answered;		  /* service thread: the answer is back */
	enum req_kind kind;
	/* parameters */
	char id[HUB_ID_MAX + 1], after[HUB_ID_MAX + 1], q[API_Q_MAX + 1];
	int online, limit;
	int64_t before;
	/* the answer (reader thread, then service thread) */
	int status;
	char *body;
	size_t len;
};

/* Per vhost ("ops") state, from lws_protocol_vh_priv_zalloc(). */
struct ops_vh {
	struct worker *w;
	pthread_t thread;
	struct hub_thread_owner reader; /* claimed by reader_main */
	int started;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct ops_req *todo, *todo_tail, *done, *done_tail; /* under lock */
	int stop;					     /* under lock */
	struct ops_req *inflight; /* service thread */
	char token[TOKEN_MAX];
	size_t token_len;
	lws_sorted_usec_list_t sul_sample; /* worker 0: chart history */
};

/* Ready when every live worker has its broker link and registry: 1, or 0
 * with why (a line) filled. Any thread: reads the shared metrics. */
int hub__http_ready(const struct metrics *m, char *why, size_t cap);

/* http_api.c: the reader thread of an ops vhost (arg: its struct ops_vh);
 * runs until vh->stop is set and the todo queue is empty. */
void *hub__http_reader_main(void *arg);

#endif
