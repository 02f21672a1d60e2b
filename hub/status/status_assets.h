/*
 * status_assets.h - the status page (hub/status/index.html, app.js,
 * app.css), compiled into hubd by embed.cmake: served by http.c on GET /,
 * /app.js, /app.css. Read-only data: any thread.
 */
#ifndef STATUS_ASSETS_H
#define STATUS_ASSETS_H

#include <stddef.h>

struct status_asset {
	const char *path;  /* "/" for index.html */
	const char *ctype; /* Content-Type */
	const unsigned char *data;
	size_t len;
};

extern const struct status_asset status_assets[];
extern const int status_asset_count;

#endif
