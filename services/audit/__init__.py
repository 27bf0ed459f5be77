"""Audit — records every access, tamper-evidently, and answers who looked at what."""
