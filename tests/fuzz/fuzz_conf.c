/*
 * fuzz_conf.c - libFuzzer target: hubd's configuration parser (hub/conf.c)
 * on an INI file (byte 0 even) or on a flag list (byte 0 odd: the rest
 * split at newlines into argv). Checks a loaded configuration keeps its
 * own rules: a usable prefix and hub id, bounded numbers.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "conf.h"
#include "hub_err.h"
#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAXARGS 32

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256], path[64], *argv[MAXARGS + 1], *copy;
	struct conf c;
	int argc = 0, fd = -1, rc;
	size_t i, start;

	if (size < 1 || size > 4096)
		return 0;
	copy = malloc(size);
	if (!copy)
		return 0;
	memcpy(copy, data + 1, size - 1);
	copy[size - 1] = '\0';
	argv[argc++] = "hubd";
	if (data[0] % 2 == 0) {
		fd = memfd_create("hubconf", 0);
		if (fd < 0 ||
		    write(fd, data + 1, size - 1) != (ssize_t)(size - 1))
			goto out;
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		argv[argc++] = "--config";
		argv[argc++] = path;
	} else {
		for (i = 0, start = 0; i <= size - 1 && argc < MAXARGS; i++)
			if (i == size - 1 || copy[i] == '\n') {
				copy[i] = '\0';
				argv[argc++] = copy + start;
				start = i + 1;
			}
	}
	argv[argc] = NULL;
	rc = conf_load(&c, argc, argv, err, sizeof(err));
	if (rc == HUB_OK) {
		if (!proto_prefix_valid(c.prefix) ||
		    !proto_id_valid(c.hub_id, strlen(c.hub_id)) || c.rate < 1 ||
		    c.max_frame < 64 || c.idle_timeout <= c.heartbeat)
			abort();
	} else if (rc != HUB_ERR_EXISTS && !err[0]) {
		abort(); /* a refusal always says why */
	}
out:
	if (fd >= 0)
		close(fd);
	free(copy);
	return 0;
}
