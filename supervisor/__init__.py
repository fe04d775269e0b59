"""lvmsuperd, the privileged LVM helper daemon (runs as root)."""
