/*
 * outbox.c - the status outbox (schema/004_status_outbox.sql): the newest
 * retained presence status per device, durable from the commit of its
 * session row until a broker acknowledged exactly that seq.
 *
 * Design: a row only ever moves to a higher presence seq (ST_OB_PUT's
 * WHERE), so whatever order workers commit in, the row holds the device's
 * newest status. Clearing compares the seq (a PUBACK of an older status
 * never clears a newer one). A PUBACK of an older status that finds a
 * newer one already acknowledged, or owned by another worker, hands the
 * newer one back for publishing: the older one may have landed after it.
 *
 * Threads: the calling thread owns the struct registry (registry.h); in
 * hubd that is the registry writer thread (and the worker's main thread
 * before the writer starts or after it stopped).
 */
#include "proto.h"
#include "registry_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int
owner_ok(const char *hub)
{
	return hub && *hub &&
	       strnlen(hub, REGISTRY_HUB_MAX + 1) <= REGISTRY_HUB_MAX;
}

static int
device_ok(const char *device)
{
	return device &&
	       proto_id_valid(device, strnlen(device, HUB_ID_MAX + 1));
}

int
registry_outbox_put(struct registry *reg, const char *device, int64_t seq,
		    const char *payload, const char *hub, int worker,
		    int *stored)
{
	sqlite3_stmt *s;
	int err;

	if (stored)
		*stored = 0;
	if (!reg || !stored)
		return HUB_ERR_INVAL;
	if (!device_ok(device) || seq <= 0 || !payload ||
	    strnlen(payload, REGISTRY_STATUS_MAX) >= REGISTRY_STATUS_MAX ||
	    !owner_ok(hub))
		return registry__fail(reg, HUB_ERR_INVAL);
	/* one statement: atomic alone, and fine inside the writer's batch */
	s = registry__stmt(reg, ST_OB_PUT);
	sqlite3_bind_text(s, 1, device, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, seq);
	sqlite3_bind_text(s, 3, payload, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 4, hub, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 5, worker);
	err = registry__step_done(reg, s);
	registry__reset(s);
	if (err == HUB_OK)
		*stored = sqlite3_changes(reg->db) > 0;
	return err;
}

/* The row of device: HUB_OK with *found, or an error. */
static int
row_get(struct registry *reg, const char *device, int *found,
	struct registry_status *st, int *pending, char *hub, size_t hublen,
	int *worker)
{
	sqlite3_stmt *s = registry__stmt(reg, ST_OB_GET);
	int rc, err = HUB_OK;

	*found = 0;
	sqlite3_bind_text(s, 1, device, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*found = 1;
		st->seq = sqlite3_column_int64(s, 0);
		registry__col_text(s, 1, st->payload, sizeof(st->payload));
		*pending = sqlite3_column_int(s, 2);
		registry__col_text(s, 3, hub, hublen);
		*worker = sqlite3_column_int(s, 4);
	} else if (rc != SQLITE_DONE) {
		err = registry__sqlerr(reg, rc);
	}
	registry__reset(s);
	return err;
}

static int
row_update(struct registry *reg, enum registry_stmt which, const char *device,
	   int64_t seq, const char *hub, int worker)
{
	sqlite3_stmt *s = registry__stmt(reg, which);
	int err;

	sqlite3_bind_text(s, 1, device, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, seq);
	if (which == ST_OB_CLAIM) {
		sqlite3_bind_text(s, 3, hub, -1, SQLITE_STATIC);
		sqlite3_bind_int(s, 4, worker);
	}
	err = registry__step_done(reg, s);
	registry__reset(s);
	return err;
}

int
registry_outbox_get(struct registry *reg, const char *device,
		    struct registry_status *st, int *found)
{
	char hub[64];
	int pending, worker;

	*found = 0;
	if (!device_ok(device))
		return HUB_ERR_INVAL;
	snprintf(st->device, sizeof(st->device), "%s", device);
	return row_get(reg, device, found, st, &pending, hub, sizeof(hub),
		       &worker);
}

int
registry_outbox_acked(struct registry *reg, const char *device, int64_t seq,
		      const char *hub, int worker,
		      struct registry_status *newer, int *republish)
{
	struct registry__op op = {0};
	struct registry_status row;
	char owner[REGISTRY_HUB_MAX + 1];
	int found = 0, pending = 0, owner_worker = 0, err;

	if (republish)
		*republish = 0;
	if (!reg || !newer || !republish)
		return HUB_ERR_INVAL;
	if (!device_ok(device) || !owner_ok(hub))
		return registry__fail(reg, HUB_ERR_INVAL);
	memset(&row, 0, sizeof(row));
	err = registry__op_begin(reg, &op);
	if (err != HUB_OK)
		goto out;
	err = row_get(reg, device, &found, &row, &pending, owner, sizeof(owner),
		      &owner_worker);
	if (err != HUB_OK || !found || row.seq < seq)
		goto out;
	if (row.seq == seq) {
		err = row_update(reg, ST_OB_CLEAR, device, seq, NULL, 0);
		goto out;
	}
	/* a newer status: our own bridge holds it if we own it and it is
	 * pending (queued after this one on the same connection) */
	if (pending && owner_worker == worker && !strcmp(owner, hub))
		goto out;
	err = row_update(reg, ST_OB_CLAIM, device, row.seq, hub, worker);
	if (err == HUB_OK) {
		memcpy(row.device, device, strlen(device) + 1);
		*newer = row;
		*republish = 1;
	}
out:
	err = registry__op_end(reg, &op, err);
	if (err != HUB_OK)
		*republish = 0;
	return err;
}

int
registry_outbox_pending(struct registry *reg, const char *hub, int worker,
			int also_from_worker,
			void (*cb)(void *arg, const struct registry_status *st),
			void *arg)
{
	struct registry__op op = {0};
	struct registry_status *rows = NULL, *grown;
	size_t n = 0, cap = 0, i;
	sqlite3_stmt *s;
	int rc, err;

	if (!reg || !cb || !owner_ok(hub))
		return HUB_ERR_INVAL;
	err = registry__op_begin(reg, &op);
	if (err != HUB_OK)
		goto out;
	s = registry__stmt(reg, ST_OB_PENDING);
	sqlite3_bind_text(s, 1, hub, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 2, worker);
	sqlite3_bind_int(s, 3, also_from_worker);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			grown = realloc(rows, cap * sizeof(*rows));
			if (!grown) {
				err = registry__fail(reg, HUB_ERR_NOMEM);
				break;
			}
			rows = grown;
		}
		registry__col_text(s, 0, rows[n].device,
				   sizeof(rows[n].device));
		rows[n].seq = sqlite3_column_int64(s, 1);
		registry__col_text(s, 2, rows[n].payload,
				   sizeof(rows[n].payload));
		n++;
	}
	if (err == HUB_OK && rc != SQLITE_DONE)
		err = registry__sqlerr(reg, rc);
	registry__reset(s);
	err = registry__op_end(reg, &op, err);
	for (i = 0; err == HUB_OK && i < n; i++)
		cb(arg, &rows[i]);
out:
	free(rows);
	return err;
}

int
registry_outbox_count(struct registry *reg, const char *hub, int worker,
		      int64_t *n)
{
	sqlite3_stmt *s;
	int rc, err = HUB_OK;

	if (n)
		*n = 0;
	if (!reg || !n || !owner_ok(hub))
		return HUB_ERR_INVAL;
	s = registry__stmt(reg, ST_OB_COUNT);
	sqlite3_bind_text(s, 1, hub, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 2, worker);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*n = sqlite3_column_int64(s, 0);
	else
		err = registry__sqlerr(reg, rc);
	registry__reset(s);
	return err;
}
