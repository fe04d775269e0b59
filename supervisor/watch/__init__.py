"""Watching LVM for changes the daemon did not make: a cheap poll of VG seqnos and,
where udevd runs, udev's block events. Uses the core below it; nothing imports it but
the daemon."""
