/* evtail — `tds-writer events tail`: subscribe to the stages' event sockets
 * (TDS_EVENTS_BIND of each) and print the tds.zoho.* events as they come,
 * one JSON object per line on stdout.
 *
 * A command-line tool, not part of the daemon: it owns its own ZeroMQ
 * context and socket and never touches the database.
 */
#ifndef TDS_EVTAIL_H
#define TDS_EVTAIL_H

#include <stdio.h>

/* argv: the arguments after "events" ("tail", "--connect", "tcp://…,…",
 * optional "--topic PREFIX", "--count N"). Returns the process exit code
 * (0, 1 on a runtime error, 2 on a bad argument with one line on stderr). */
int tds_evtail_main(int argc, char **argv, FILE *out);

#endif
