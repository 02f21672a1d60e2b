/*
 * hub_err.h - the one error enum of the project.
 *
 * Every library function returns an int that is HUB_OK or one of these.
 * SQLite, Paho, mbedTLS and libc codes are mapped at the module edge, so
 * callers never mix -1, errno and library codes.
 */
#ifndef HUB_ERR_H
#define HUB_ERR_H

enum hub_err {
	HUB_OK = 0,
	HUB_ERR_NOMEM = -1,	/* allocation failed */
	HUB_ERR_INVAL = -2,	/* bad argument or malformed input */
	HUB_ERR_NOTFOUND = -3,	/* no such device / session / key */
	HUB_ERR_EXISTS = -4,	/* already exists */
	HUB_ERR_IO = -5,	/* system call failed */
	HUB_ERR_DB = -6,	/* SQLite error */
	HUB_ERR_FULL = -7,	/* bounded queue or buffer full */
	HUB_ERR_TOOBIG = -8,	/* length over its cap */
	HUB_ERR_BROKER = -9,	/* MQTT broker unreachable or refused */
	HUB_ERR_TLS = -10,	/* mbedTLS error */
	HUB_ERR_AUTH = -11,	/* unknown device or bad token */
	HUB_ERR_DISABLED = -12, /* device disabled */
	HUB_ERR_CLOSED = -13,	/* object is shutting down */
	HUB_ERR_BUSY = -14,	/* try again later */
	HUB_ERR_SCHEMA = -15,	/* database newer than this binary */
};

/* Static English text for an error code; never NULL. Any thread. */
const char *hub_strerror(int err);

#endif
