/* hub_err.c - text for the project's error enum. */
#include "hub_err.h"

const char *
hub_strerror(int err)
{
	switch (err) {
	case HUB_OK:
		return "ok";
	case HUB_ERR_NOMEM:
		return "out of memory";
	case HUB_ERR_INVAL:
		return "invalid argument";
	case HUB_ERR_NOTFOUND:
		return "not found";
	case HUB_ERR_EXISTS:
		return "already exists";
	case HUB_ERR_IO:
		return "i/o error";
	case HUB_ERR_DB:
		return "database error";
	case HUB_ERR_FULL:
		return "queue full";
	case HUB_ERR_TOOBIG:
		return "too large";
	case HUB_ERR_BROKER:
		return "broker unavailable";
	case HUB_ERR_TLS:
		return "tls error";
	case HUB_ERR_AUTH:
		return "authentication failed";
	case HUB_ERR_DISABLED:
		return "device disabled";
	case HUB_ERR_CLOSED:
		return "closed";
	case HUB_ERR_BUSY:
		return "busy";
	case HUB_ERR_SCHEMA:
		return "database schema is newer than this program";
	}
	return "unknown error";
}
