/*
 * fuzz_proxy.c - libFuzzer target: the PROXY protocol header parser
 * (proto_proxy.c). Checks what the hub's reader relies on never to read
 * past a header: every proper prefix of a complete header is "more
 * needed" (never complete with another length, never "not a header"), a
 * v1 header ends in CRLF within 107 bytes, a v2 header is at least its 16
 * bytes, and an address, when there is one, prints.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proto_proxy pp, pre;
	char addr[64];
	size_t k, upto;
	int rc;

	rc = proto_proxy_parse(data, size, &pp);
	if (rc == HUB_ERR_BUSY) {
		/* a prefix of a prefix is one too */
		if (size > 1 &&
		    proto_proxy_parse(data, size - 1, &pre) != HUB_ERR_BUSY)
			abort();
		return 0;
	}
	if (rc != HUB_OK)
		return 0;
	if (pp.version == 1) {
		if (pp.header_len > size ||
		    pp.header_len > PROTO_PROXY_V1_MAX || pp.header_len < 15 ||
		    memcmp(data + pp.header_len - 2, "\r\n", 2))
			abort();
		upto = pp.header_len;
	} else {
		if (pp.version != 2 || pp.header_len < 16 ||
		    pp.header_len > 16 + 65535)
			abort();
		upto = 16;
	}
	for (k = 0; k < upto; k++)
		if (proto_proxy_parse(data, k, &pre) != HUB_ERR_BUSY)
			abort();
	if ((pp.family == 4 || pp.family == 6) !=
	    (proto_proxy_addr(&pp, addr, sizeof(addr)) == HUB_OK))
		abort();
	if (pp.family && !addr[0])
		abort();
	return 0;
}
