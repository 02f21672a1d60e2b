/*
 * mbedtls-hub-config.h - the hub's mbedTLS 3.6 configuration: a device-facing
 * TLS server (and the hub-device client), TLS 1.2 and 1.3 only.
 *
 * tools/build-deps installs this file as <mbedtls/hub_config.h> and makes the
 * library's own mbedtls_config.h include it last (MBEDTLS_USER_CONFIG_FILE),
 * so mbedTLS itself, libwebsockets and the hub all compile against the same
 * configuration (the structs' layout depends on it). Everything not changed
 * here keeps mbedTLS 3.6's default; every change says why. Changing this file
 * rebuilds mbedTLS and lws (it is part of the recipe's hash).
 */
#ifndef HUB_MBEDTLS_CONFIG_H
#define HUB_MBEDTLS_CONFIG_H

/* ---- protocol versions ------------------------------------------------- */
/* TLS 1.2 and 1.3 only (3.6 has no 1.0/1.1 at all; RFC 8996). No DTLS: the
 * hub speaks TCP only; DTLS code is attack surface and per-context state. */
#undef MBEDTLS_SSL_PROTO_DTLS
#undef MBEDTLS_SSL_DTLS_ANTI_REPLAY
#undef MBEDTLS_SSL_DTLS_HELLO_VERIFY
#undef MBEDTLS_SSL_DTLS_CLIENT_PORT_REUSE
#undef MBEDTLS_SSL_DTLS_CONNECTION_ID
#undef MBEDTLS_SSL_DTLS_CONNECTION_ID_COMPAT
#undef MBEDTLS_SSL_COOKIE_C /* only DTLS HelloVerifyRequest uses it */

/* No renegotiation: the classic source of TLS 1.2 server CPU exhaustion and
 * of its own CVEs; devices never need it (3.6's default has it compiled in,
 * refused at run time; compiled out it cannot be turned on by mistake). */
#undef MBEDTLS_SSL_RENEGOTIATION

/* ---- key exchange and cipher suites ---------------------------------------
 * ECDHE only (forward secrecy), AEAD only. No static RSA / ECDH, no DHE (slow,
 * and finite-field parameters to police), no PSK suites (the hub has no PSK
 * identities: device credentials are tokens and certificates). */
#undef MBEDTLS_KEY_EXCHANGE_PSK_ENABLED
#undef MBEDTLS_KEY_EXCHANGE_DHE_PSK_ENABLED
#undef MBEDTLS_KEY_EXCHANGE_ECDHE_PSK_ENABLED
#undef MBEDTLS_KEY_EXCHANGE_RSA_PSK_ENABLED
#undef MBEDTLS_KEY_EXCHANGE_RSA_ENABLED
#undef MBEDTLS_KEY_EXCHANGE_DHE_RSA_ENABLED
#undef MBEDTLS_KEY_EXCHANGE_ECDH_ECDSA_ENABLED
#undef MBEDTLS_KEY_EXCHANGE_ECDH_RSA_ENABLED
#undef MBEDTLS_DHM_C /* only DHE used it */
/* kept: MBEDTLS_KEY_EXCHANGE_ECDHE_ECDSA_ENABLED and _ECDHE_RSA_ENABLED (an
 * operator's server certificate may be ECDSA or RSA) */

/* TLS 1.3 resumption without a fresh ECDHE (psk_ke) has no forward secrecy;
 * clients offer psk_dhe_ke anyway. */
#undef MBEDTLS_SSL_TLS1_3_KEY_EXCHANGE_MODE_PSK_ENABLED

/* The complete suite list, in the server's order of preference (mbedTLS's
 * TLS 1.2 server takes its own order; TLS 1.3 too). AES-128-GCM first: AES-NI
 * makes it the cheapest AEAD on the servers we target, and 128 bits are the
 * security level of P-256/x25519 anyway; ChaCha20-Poly1305 for clients
 * without AES hardware (they list it first). No CBC, no CCM-8. */
#define MBEDTLS_SSL_CIPHERSUITES                                               \
	MBEDTLS_TLS1_3_AES_128_GCM_SHA256, MBEDTLS_TLS1_3_AES_256_GCM_SHA384,  \
	    MBEDTLS_TLS1_3_CHACHA20_POLY1305_SHA256,                           \
	    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,                   \
	    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,                   \
	    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,             \
	    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,                     \
	    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,                     \
	    MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
/* Encrypt-then-MAC only applies to CBC suites, of which there are none. */
#undef MBEDTLS_SSL_ENCRYPT_THEN_MAC

/* ---- curves -------------------------------------------------------------- */
/* Key exchange: x25519 and P-256 (the server's order is set at run time by
 * lws-mbedtls-tls13-tickets.patch from measurement, see README). P-384 and
 * P-521 stay for certificates and for clients that offer nothing else. The
 * small, Koblitz, Brainpool and 448 curves go: no device stack needs them and
 * each is code and per-curve tables. */
#undef MBEDTLS_ECP_DP_SECP192R1_ENABLED
#undef MBEDTLS_ECP_DP_SECP224R1_ENABLED
#undef MBEDTLS_ECP_DP_SECP192K1_ENABLED
#undef MBEDTLS_ECP_DP_SECP224K1_ENABLED
#undef MBEDTLS_ECP_DP_SECP256K1_ENABLED
#undef MBEDTLS_ECP_DP_BP256R1_ENABLED
#undef MBEDTLS_ECP_DP_BP384R1_ENABLED
#undef MBEDTLS_ECP_DP_BP512R1_ENABLED
#undef MBEDTLS_ECP_DP_CURVE448_ENABLED
/* Fixed-point comb for multiplications by the generator (ECDHE key
 * generation, ECDSA signing): ~2x faster for them. The tables are static
 * constants for the NIST curves, so no per-connection memory. Window 4 is
 * mbedTLS's default and the measured optimum for P-256 on x86-64. */
#define MBEDTLS_ECP_FIXED_POINT_OPTIM 1
#define MBEDTLS_ECP_WINDOW_SIZE 4
/* kept: MBEDTLS_ECP_NIST_OPTIM (fast reduction for the NIST primes) */

/* ---- record buffers (the biggest per-connection cost) --------------------
 * Input: a peer may send records of up to 16384 bytes unless it negotiated
 * max_fragment_length, which ordinary clients don't, so IN must stay 16384
 * (an idle connection could release it: see below).
 * Output: the hub chooses its record size; 4096 bytes hold any frame the hub
 * sends in one record or a few (lws writes larger messages in pieces) and the
 * server's Certificate message (a chain up to ~4 KB: a leaf and an
 * intermediate, RSA-2048 or ECDSA). 16384 -> 4096 saves 12 KiB per device. */
#define MBEDTLS_SSL_IN_CONTENT_LEN 16384
#define MBEDTLS_SSL_OUT_CONTENT_LEN 4096
/* Idle connections keep a 512-byte input buffer instead of 16.7 KB:
 * patches/mbedtls-idle-input-buffer.patch releases it when a read consumed
 * the last record and grows it back when a record header says the next one
 * is larger (OpenSSL's SSL_MODE_RELEASE_BUFFERS), on mbedTLS's variable
 * buffer lengths, whose #4485 (the input buffer shrunk to OUT after the
 * handshake) the same patch fixes; and
 * patches/mbedtls-free-tls13-handshake.patch frees the TLS 1.3 handshake
 * state that 3.6 keeps for the connection's life (5.6 KiB per device).
 * Measured (tools/bench-tls, one run, KiB per idle device, TLS 1.2 / 1.3):
 * 13.1 / 13.2 with both patches, 28.1 / 32.3 without, in one run of
 * -n 2000 (docs/benchmarks.md); handshake CPU the same within noise.
 * 512: a WebSocket ping, pong or short message (up to ~470 bytes of
 * payload) fits without growing; larger records grow it for their read. */
#define MBEDTLS_SSL_VARIABLE_BUFFER_LENGTH
#define MBEDTLS_SSL_HUB_RELEASE_IDLE_IN_BUF
#define MBEDTLS_SSL_HUB_IDLE_IN_BUF_LEN 512
#define MBEDTLS_SSL_HUB_FREE_TLS13_HANDSHAKE

/* ---- TLS 1.2 key derivation ---------------------------------------------- */
/* patches/mbedtls-tls12-key-block.patch: derive only the key block the suite
 * uses (40 bytes for AES-128-GCM) instead of 256 bytes for every suite: 2
 * rounds of the SHA-256 PRF instead of 8. It was 7.9 % of a worker's CPU
 * while devices reconnected with TLS 1.2 tickets (perf). */
#define MBEDTLS_SSL_HUB_SHORT_KEY_BLOCK

/* ---- resumption ---------------------------------------------------------- */
/* Session tickets (TLS 1.2 RFC 5077, TLS 1.3 NewSessionTicket/PSK): stateless
 * resumption that works on any worker and any hub that share the ticket key
 * (hub/tls.c). Defaults in 3.6; named so removing them is a visible change. */
#define MBEDTLS_SSL_SESSION_TICKETS
#define MBEDTLS_SSL_TICKET_C
/* A per-process session cache cannot serve a device that reconnects to
 * another worker (SO_REUSEPORT) or hub: tickets only. */
#undef MBEDTLS_SSL_CACHE_C
/* TLS 1.3 in 3.6 needs the peer certificate kept after the handshake (the
 * hub also reads the client certificate's CN after it). Default; named. */
#define MBEDTLS_SSL_KEEP_PEER_CERTIFICATE
/* TLS 1.3 uses PSA crypto (psa_crypto_init() once per process: done by
 * lws-mbedtls-shared-rng.patch, which also takes its random bytes from PSA's
 * one process-wide DRBG). Key slots grow on demand (default). */
#define MBEDTLS_PSA_CRYPTO_C
#define MBEDTLS_PSA_KEY_STORE_DYNAMIC
/* No persistent PSA keys: no key files on disk (ITS) for a server. */
#undef MBEDTLS_PSA_CRYPTO_STORAGE_C
#undef MBEDTLS_PSA_ITS_FILE_C

/* ---- threads ------------------------------------------------------------- */
/* hubd workers run the service thread, the bridge and the registry writer;
 * the DRBG, PSA's key store and the ticket keys are shared between threads
 * and lock themselves with this. */
#define MBEDTLS_THREADING_C
#define MBEDTLS_THREADING_PTHREAD

/* ---- size and surface ---------------------------------------------------- */
#undef MBEDTLS_SELF_TEST /* tests are run upstream and by Debian */
#undef MBEDTLS_DEBUG_C	 /* per-record debug hooks; lws never enables them */
#undef MBEDTLS_SSL_CONTEXT_SERIALIZATION /* no context export/import */
#undef MBEDTLS_TIMING_C	 /* only DTLS retransmission timers use it */
#undef MBEDTLS_PADLOCK_C /* VIA CPUs */
#undef MBEDTLS_ECJPAKE_C /* Thread/J-PAKE, not TLS */
#undef MBEDTLS_KEY_EXCHANGE_ECJPAKE_ENABLED

#endif
