"""One home per wire message: how each protobuf message of ``proto/`` maps to and from the domain.

Adding a field to a message means editing its ``.proto``, ``make proto``, and the one module here
that maps it — not every service that sends or reads it.
"""
