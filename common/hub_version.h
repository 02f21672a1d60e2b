/*
 * hub_version.h - the project's version, printed by every binary's
 * --version and exported as hub_build_info{version=...}. Bump on release.
 */
#ifndef HUB_VERSION_H
#define HUB_VERSION_H

#define HUB_VERSION "0.9.0"

#endif
