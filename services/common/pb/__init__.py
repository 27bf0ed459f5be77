"""Code generated from ``proto/`` by ``make proto``; do not edit. ``tests/test_proto.py`` checks it is current."""
