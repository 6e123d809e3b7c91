"""A module that fails to import."""

import evstream_no_such_module  # noqa: F401
