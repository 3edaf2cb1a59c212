// Package kaimport converts a keepalived.conf into a directord configuration
// (shared/CONFIG.md). It reads keepalived's grammar as keepalived does:
// words, double-quoted strings and { } blocks, comments from '#' or '!' to
// the end of the line, include with globs resolved against the including
// file, $NAME=value definitions. It then maps vrrp_instance, vrrp_sync_group,
// vrrp_script, virtual_server, real_server and the TCP, HTTP, SSL, MISC, DNS
// and UDP checkers onto the YAML contract, with keepalived's own defaults
// written out where they differ from directord's. Every option that cannot
// be carried over is returned as a Note with the file and line it came
// from; a syntax error or an unreadable include is an Error, also located.
package kaimport
