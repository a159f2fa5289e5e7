"""Telemetry settings for every Prefect process ptyflow starts (no imports: the server
helpers and the temporary server both read it without importing each other)."""

# Prefect's server sends a heartbeat to prefect.io (and logs "Failed to send telemetry"
# where it cannot); its clients send usage events unless DO_NOT_TRACK is set.
TELEMETRY_OFF = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
