"""LVM as the daemon sees it: argv builders, runners (exec and persistent shells), report
parsers, and typed calls over them. Knows nothing of callers, policy or transports."""
