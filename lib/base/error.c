/* Error codes: the one place that names and describes them. */
#include "tern/tern.h"

typedef struct {
  int code;
  const char *name;
  const char *text;
} err_entry;

static const err_entry errors[] = {
  {TERN_OK, "TERN_OK", "success"},
  {TERN_EINVAL, "TERN_EINVAL", "invalid argument"},
  {TERN_ENOMEM, "TERN_ENOMEM", "out of memory"},
  {TERN_EPROTO, "TERN_EPROTO", "the peer sent malformed or unexpected data"},
  {TERN_EDECRYPT, "TERN_EDECRYPT", "a packet failed authentication (tampered, or sealed with another key)"},
  {TERN_EREPLAY, "TERN_EREPLAY", "a packet was replayed or is older than the replay window"},
  {TERN_ERELAYKEY, "TERN_ERELAYKEY", "the relay's key does not match the pinned relay key"},
  {TERN_EUNKNOWNKEY, "TERN_EUNKNOWNKEY", "the relay does not accept this client key"},
  {TERN_EHANDSHAKE, "TERN_EHANDSHAKE", "the handshake failed or did not finish in time"},
  {TERN_ENONCE, "TERN_ENONCE", "the session used up its nonces; reconnect for fresh keys"},
  {TERN_ETOOBIG, "TERN_ETOOBIG", "the message is larger than allowed"},
  {TERN_EIO, "TERN_EIO", "an I/O operation failed"},
  {TERN_ETIMEDOUT, "TERN_ETIMEDOUT", "the peer stopped answering"},
  {TERN_ECLOSED, "TERN_ECLOSED", "not connected, or closed by request"},
  {TERN_EAGAIN, "TERN_EAGAIN", "nothing to do now; try again later"},
  {TERN_EEXIST, "TERN_EEXIST", "the file exists (use --force to overwrite)"},
  {TERN_ENOENT, "TERN_ENOENT", "no such file, user or record"},
  {TERN_EKEYFILE, "TERN_EKEYFILE", "the key file is malformed or readable by others"},
  {TERN_EOFFLINE, "TERN_EOFFLINE", "the recipient has no online device"},
  {TERN_EVERSION, "TERN_EVERSION", "the peer speaks an incompatible protocol version"},
  {TERN_EBUFSIZE, "TERN_EBUFSIZE", "the output buffer is too small"},
  {TERN_ECRYPTO, "TERN_ECRYPTO", "the crypto library failed to initialise"},
  {TERN_EADDR, "TERN_EADDR", "the address could not be resolved or bound"},
  {TERN_ERESOURCE, "TERN_ERESOURCE", "a limit was reached (peers, queue or descriptors)"},
  {TERN_ESHUTDOWN, "TERN_ESHUTDOWN", "the relay is shutting down"},
  {TERN_ESTORE, "TERN_ESTORE", "the message store failed (disk full, I/O error, or its cluster unreachable)"},
  {TERN_EEXPIRED, "TERN_EEXPIRED", "the message was not delivered within the retention period"},
  {TERN_EDENIED, "TERN_EDENIED", "the relay does not allow this sender to message that user"},
  {TERN_EBADNET, "TERN_EBADNET", "the network forgets idle UDP mappings too fast for a sparing keepalive"},
  {TERN_EFULL, "TERN_EFULL", "the relay is full; it asked to be tried again later"},
  {TERN_EBUSY, "TERN_EBUSY", "the relay is reachable but too busy to answer now; messages wait in the outbox"},
  {TERN_ETOKENEXPIRED, "TERN_ETOKENEXPIRED", "the backend token has expired; ask the backend for a new one"},
  {TERN_ETOKENINVALID, "TERN_ETOKENINVALID", "the backend token is malformed or not signed by the relay's token key"},
  {TERN_ETOKENKEY, "TERN_ETOKENKEY", "the backend token is bound to another device key or user"},
  {TERN_ETOKENREVOKED, "TERN_ETOKENREVOKED", "the backend token or this device key is revoked"},
  {TERN_ENOTSUP, "TERN_ENOTSUP", "this build has no single descriptor; use tern_client_pollfds"},
  {TERN_EREPLACED, "TERN_EREPLACED", "a newer session with this device key replaced this one (another copy of the app?)"},
  {TERN_ESTALE, "TERN_ESTALE", "the relay accepted a later handshake from this device key: the device clock is behind"},
  {TERN_EQUOTA, "TERN_EQUOTA", "the relay already holds as much as it may for this sender or this recipient"},
  {TERN_ERATE, "TERN_ERATE", "the device sends faster than the relay allows; the message is sent again shortly"},
  {TERN_ERESET, "TERN_ERESET", "the relay restarted and reset this session; reconnecting"},
};

static const err_entry *find(int err) {
  for (size_t i = 0; i < sizeof(errors) / sizeof(errors[0]); i++)
    if (errors[i].code == err) return &errors[i];
  return NULL;
}

const char *tern_strerror(int err) {
  const err_entry *e = find(err);
  return e ? e->text : "unknown error";
}

const char *tern_errname(int err) {
  const err_entry *e = find(err);
  return e ? e->name : "TERN_E?";
}
