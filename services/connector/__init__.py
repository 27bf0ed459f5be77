"""Connector — 前置机: answers its department's exchange requests from a configured backend."""
