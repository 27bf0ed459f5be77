"""The small shared kernel every Tongban service is built from (settings, database, bus, errors, security)."""
