"""The service core: method table, validation, authorization, policy, locks, jobs and
audit. Knows nothing of sockets or D-Bus; uses ``lvm`` below it."""
