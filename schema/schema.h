/*
 * schema.h - the registry's SQL migrations, embedded at build time from
 * schema/NNN_*.sql (see schema/CMakeLists.txt). Migration N (1-based, the
 * value PRAGMA user_version holds after it) is schema_migrations[N - 1].
 * Read-only data: any thread.
 */
#ifndef SCHEMA_H
#define SCHEMA_H

extern const char *const schema_migrations[];
extern const int schema_count;

#endif
