"""Transports: the Unix-socket JSON-RPC server and the D-Bus adapter. Each only decodes,
authorizes, calls the core and encodes."""
