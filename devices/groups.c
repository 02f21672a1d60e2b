/*
 * groups.c - device groups (schema/003_groups.sql): membership for group
 * commands (groups/{g}/cmd/#). hubctl's main thread; the credential
 * snapshot reads the memberships with the devices (creds.c).
 */
#include "proto.h"
#include "registry_int.h"

#include <string.h>

static int
group_ok(const char *g)
{
	size_t n = registry__strnlen(g, REGISTRY_GROUP_MAX + 1), i;

	if (n < 1 || n > REGISTRY_GROUP_MAX)
		return 0;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)g[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		      (c >= '0' && c <= '9') || c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

static int
id_ok(const char *id)
{
	return id && proto_id_valid(id, registry__strnlen(id, HUB_ID_MAX + 1));
}

/* One membership change per id inside one op: add (1) or remove (0). */
static int
change(struct registry *reg, int add, const char *group, const char *const *ids,
       size_t n, size_t *count)
{
	struct registry__op op = {0};
	sqlite3_stmt *s;
	size_t i;
	int err;

	*count = 0;
	if (!group_ok(group))
		return registry__fail(reg, HUB_ERR_INVAL);
	for (i = 0; i < n; i++)
		if (!id_ok(ids[i])) {
			*count = i;
			return registry__fail(reg, HUB_ERR_INVAL);
		}
	err = registry__op_begin(reg, &op);
	for (i = 0; err == HUB_OK && i < n; i++) {
		if (add) {
			s = registry__stmt(reg, ST_DEV_EXISTS);
			sqlite3_bind_text(s, 1, ids[i], -1, SQLITE_STATIC);
			err = sqlite3_step(s);
			registry__reset(s);
			if (err != SQLITE_ROW) {
				err =
				    err == SQLITE_DONE
					? registry__fail(reg, HUB_ERR_NOTFOUND)
					: registry__sqlerr(reg, err);
				*count = i;
				break;
			}
		}
		s = registry__stmt(reg, add ? ST_GRP_ADD : ST_GRP_REMOVE);
		sqlite3_bind_text(s, 1, group, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 2, ids[i], -1, SQLITE_STATIC);
		err = registry__step_done(reg, s);
		registry__reset(s);
		if (err == HUB_OK && !add)
			*count += (size_t)sqlite3_changes(reg->db);
	}
	return registry__op_end(reg, &op, err);
}

int
registry_group_add(struct registry *reg, const char *group,
		   const char *const *ids, size_t n, size_t *bad)
{
	size_t b = 0;
	int err;

	if (!reg || !group || (!ids && n))
		return HUB_ERR_INVAL;
	err = change(reg, 1, group, ids, n, &b);
	if (bad)
		*bad = b;
	return err;
}

int
registry_group_remove(struct registry *reg, const char *group,
		      const char *const *ids, size_t n, size_t *removed)
{
	size_t r = 0;
	int err;

	if (!reg || !group || (!ids && n))
		return HUB_ERR_INVAL;
	err = change(reg, 0, group, ids, n, &r);
	if (removed)
		*removed = err == HUB_OK ? r : 0;
	return err;
}

int
registry_group_list(struct registry *reg,
		    void (*cb)(void *arg, const char *group, int64_t n),
		    void *arg)
{
	sqlite3_stmt *s;
	int rc;

	if (!reg || !cb)
		return HUB_ERR_INVAL;
	s = registry__stmt(reg, ST_GRP_LIST);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW)
		cb(arg, (const char *)sqlite3_column_text(s, 0),
		   sqlite3_column_int64(s, 1));
	rc = rc == SQLITE_DONE ? HUB_OK : registry__sqlerr(reg, rc);
	registry__reset(s);
	return rc;
}

int
registry_device_groups(struct registry *reg, const char *id,
		       void (*cb)(void *arg, const char *group), void *arg)
{
	sqlite3_stmt *s;
	int rc;

	if (!reg || !cb || !id_ok(id))
		return HUB_ERR_INVAL;
	s = registry__stmt(reg, ST_GRP_OF_DEVICE);
	sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW)
		cb(arg, (const char *)sqlite3_column_text(s, 0));
	rc = rc == SQLITE_DONE ? HUB_OK : registry__sqlerr(reg, rc);
	registry__reset(s);
	return rc;
}
